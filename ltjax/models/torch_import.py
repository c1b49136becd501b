"""Pretrained starts: a torchvision ResNet ``state_dict`` as ltjax variables.

torchvision's ResNets (``torchvision.models.resnet``: ``resnet50``,
``resnet152``, ...) name their modules ``conv1``, ``bn1``,
``layer{i}.{j}.conv{k}``, ``layer{i}.{j}.bn{k}``, ``layer{i}.{j}.downsample.0``
(the projection conv), ``layer{i}.{j}.downsample.1`` (its BatchNorm) and
``fc``. :class:`ltjax.models.ResNet` uses the same names (``layer{i}_{j}``,
``downsample_conv``, ``downsample_bn``), so a conversion is a renaming and
two layout changes: convolution weights ``[out, in, kh, kw]`` become HWIO
kernels ``[kh, kw, in, out]`` and the linear weight ``[out, in]`` becomes
``[in, out]``. BatchNorm's ``weight``/``bias`` are ``scale``/``bias``, its
``running_mean``/``running_var`` the ``batch_stats`` ``mean``/``var`` (the
unbiased running variance, as :class:`ltjax.models.layers.BatchNorm` keeps
it); ``num_batches_tracked`` is dropped (with a fixed momentum PyTorch does
not read it).

PyTorch is imported only in :func:`read_state_dict`, so nothing else here
needs it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import numpy as np
from flax import traverse_util

from ltjax.errors import ConfigError, DataError, MissingFileError

HEAD = 'fc'  # the classifier's name in torchvision's ResNets and ltjax's
_LEAVES = {
  'kernel': 'weight',
  'scale': 'weight',
  'bias': 'bias',
  'mean': 'running_mean',
  'var': 'running_var',
}
_MODULES = {'downsample_conv': 'downsample.0', 'downsample_bn': 'downsample.1'}


def torch_key(path: tuple[str, ...]) -> str:
  """torchvision's ``state_dict`` key of an ltjax variable path.

  ``('params', 'layer1_0', 'downsample_conv', 'kernel')`` is
  ``'layer1.0.downsample.0.weight'``; the first element is the collection
  (``'params'`` or ``'batch_stats'``).
  """
  _, *modules, leaf = path
  names = [
    _MODULES.get(m, re.sub(r'^(layer\d+)_(\d+)$', r'\1.\2', m)) for m in modules
  ]
  return '.'.join([*names, _LEAVES[leaf]])


def _natural(key: str):
  """Sort key for state_dict keys in module order (``layer2.10`` after ``.9``)."""
  return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', key)]


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """The tensors of a PyTorch ``state_dict`` file (``.pth``) as float32 arrays.

  Accepts a bare ``state_dict`` (what ``torch.save(model.state_dict())``
  writes, and torchvision's published weights) or a training checkpoint that
  holds one under ``'state_dict'``; strips ``nn.DataParallel``'s ``module.``
  prefix and drops BatchNorm's ``num_batches_tracked``. Loads with
  ``weights_only=True``: the file's tensors, never its code.
  """
  if not os.path.isfile(path):
    raise MissingFileError(
      f'config.init_from: no file {path}. Give the path of a torchvision '
      f'ResNet state_dict (.pth), or an empty string to train from scratch.'
    )
  import torch  # PyTorch only for a pretrained start  # noqa: PLC0415

  loaded = torch.load(path, map_location='cpu', weights_only=True)
  if isinstance(loaded, Mapping) and isinstance(
    loaded.get('state_dict'), Mapping
  ):
    loaded = loaded['state_dict']
  if not isinstance(loaded, Mapping) or not all(
    isinstance(v, torch.Tensor) for v in loaded.values()
  ):
    raise DataError(
      f'config.init_from: {path} holds no state_dict (a mapping of names to '
      f'tensors); save one with torch.save(model.state_dict(), path).'
    )
  return {
    k.removeprefix('module.'): v.detach().to(torch.float32).numpy()
    for k, v in loaded.items()
    if not k.endswith('num_batches_tracked')
  }


def _to_torch_shape(shape) -> tuple:
  """The inverse of :func:`_to_flax`'s layout change, for error messages."""
  if len(shape) == 4:  # [kh, kw, in, out] -> [out, in, kh, kw]
    return tuple(shape[i] for i in (3, 2, 0, 1))
  return tuple(reversed(shape)) if len(shape) == 2 else tuple(shape)


def _to_flax(value: np.ndarray) -> np.ndarray:
  if value.ndim == 4:  # conv: [out, in, kh, kw] -> [kh, kw, in, out]
    return value.transpose(2, 3, 1, 0)
  if value.ndim == 2:  # linear: [out, in] -> [in, out]
    return value.T
  return value


def _mismatch(where: str, detail: str, model_name: str) -> ConfigError:
  return ConfigError(
    f'config.init_from: {where} is not the architecture of config.model '
    f'{model_name!r}; the first differing layer is {detail}. Set '
    f'config.model to the architecture the weights were saved from (for '
    f"torchvision's resnet50 weights, 'resnet50'; for resnet152, "
    f"'resnet152')."
  )


def convert_resnet(
  state_dict: Mapping[str, np.ndarray],
  template,
  *,
  model_name: str = 'the model',
  where: str = 'the state_dict',
) -> tuple[dict, bool]:
  """``(variables, head_is_fresh)``: ``state_dict`` as ltjax variables.

  Args:
    state_dict: torchvision-named float arrays (:func:`read_state_dict`).
    template: the model's ``{'params': ..., 'batch_stats': ...}`` variables,
      or their shapes (``jax.eval_shape`` of ``model.init``).
    model_name: the model's name, for errors.
    where: the source's name (the file), for errors.

  Returns:
    The converted variables, shaped as ``template`` except that the head
    (``fc``) is left out when it does not fit (another class count, or
    LDAM's cosine head): the caller keeps its freshly initialized head. The
    flag says so.

  Raises:
    ltjax.errors.ConfigError: the body differs from the model's; it names
      the first differing layer in module order.
  """
  flat = traverse_util.flatten_dict(template)
  expected = {torch_key(p): p for p in flat}
  body, head = {}, {}
  for key in sorted(state_dict, key=_natural):
    value, path = state_dict[key], expected.get(key)
    is_head = key.split('.')[0] == HEAD
    if path is None:
      if is_head:
        head[key] = None  # a head parameter the model has not: head is fresh
        continue
      raise _mismatch(
        where,
        f'{key} {tuple(value.shape)}: in the file, not in the model',
        model_name,
      )
    array = _to_flax(value)
    if array.shape != tuple(flat[path].shape):
      if is_head:
        head[key] = None
        continue
      want = _to_torch_shape(flat[path].shape)
      raise _mismatch(
        where,
        f'{key}: {tuple(value.shape)} in the file, {want} in the model',
        model_name,
      )
    (head if is_head else body)[key] = array.astype(flat[path].dtype)
  missing = sorted(
    (k for k, p in expected.items() if p[1] != HEAD and k not in body),
    key=_natural,
  )
  if missing:
    raise _mismatch(
      where, f'{missing[0]}: in the model, not in the file', model_name
    )
  model_head = {k for k, p in expected.items() if p[1] == HEAD}
  fresh = set(head) != model_head or any(v is None for v in head.values())
  kept = body if fresh else {**body, **head}
  variables = traverse_util.unflatten_dict(
    {expected[k]: v for k, v in kept.items()}
  )
  return variables, fresh


def merge(variables, pretrained):
  """``variables`` with every leaf ``pretrained`` has replaced by its."""
  if not pretrained:
    return variables
  flat = traverse_util.flatten_dict(variables)
  flat.update(traverse_util.flatten_dict(pretrained))
  return traverse_util.unflatten_dict(flat)
