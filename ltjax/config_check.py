"""One validation pass over every config field, before any data is read.

:func:`check` walks :data:`ltjax.config_schema.SCHEMA`, which names every
field a run reads (stage 2's included, so a bad ``eps_grad`` stops at
start, not at epoch 160) with its type and what is allowed, and then applies
the rules that tie fields together (lr drops after the last epoch are
allowed, with a warning). Every message names the field, the value and what
is allowed.
"""

from __future__ import annotations

import os

import jax
from absl import logging

from ltjax import models
from ltjax.config_schema import SCHEMA
from ltjax.data.specs import LARGE_DATASETS
from ltjax.errors import ConfigError as ConfigError


def _get(config, field):
  node = config
  for part in field.split('.'):
    node = node[part]
  return node


def _fail(field, value, allowed):
  raise ConfigError(
    f'config.{field}={value!r} is not allowed: use {allowed} '
    f'(--config.{field}=...).'
  )


def check(config) -> None:
  """Raises :class:`ltjax.errors.ConfigError` for the first bad field (in
  the order of the schema) or combination."""
  for name, field in SCHEMA.items():
    try:
      value = _get(config, name)
    except (KeyError, AttributeError):
      raise ConfigError(
        f'config.{name} is missing; start from a file in configs/.'
      ) from None
    if value is None:  # a placeholder the config file leaves to the user
      raise ConfigError(
        f'config.{name} is required by this config (its docstring says what '
        f'to give): pass --config.{name}=...'
        + (f' ({name}: {field.doc}).' if field.doc else '.')
      )
    allowed = field.check(value)
    if allowed is not None:
      _fail(name, value, allowed)
  _check_schedule(config)
  _check_devices(config)
  _check_init_from(config)


def _check_schedule(config) -> None:
  n = config.num_epochs
  if config.stage2_epoch > n:
    _fail('stage2_epoch', config.stage2_epoch, f'in [0, num_epochs={n}]')
  bounds = list(config.lr_boundaries)
  late = [b for b in bounds if b > n]
  if late:
    # Allowed, so that --config.num_epochs alone shortens a run, but said.
    logging.warning(
      'config.lr_boundaries %s: the drops at epochs %s lie after the last '
      'epoch (num_epochs=%d) and never apply; a shortened schedule with its '
      'drops is the variant epochs=E,meta_epochs=M.',
      tuple(bounds), late, n,
    )  # fmt: skip
  if config.warmup_epochs > n:
    _fail('warmup_epochs', config.warmup_epochs, f'<= num_epochs={n}')
  if config.num_seeds > 1 and config.dataset in LARGE_DATASETS:
    _fail(
      'num_seeds',
      config.num_seeds,
      f'1 for {config.dataset} (vectorized seeds need an array dataset kept '
      'on the device: CIFAR or npz)',
    )


def _check_devices(config) -> None:
  n = jax.device_count()
  for field in ('batch_size', 'dev_batch_size', 'eval_batch_size'):
    if config[field] % n:
      raise ConfigError(
        f'config.{field}={config[field]} does not divide evenly over {n} '
        f'devices; use a multiple of {n}.'
      )


def _check_init_from(config) -> None:
  path = config.init_from
  if not path:
    return
  if config.model not in models.registry.TORCHVISION_LAYOUT:
    raise ConfigError(
      f'config.init_from loads torchvision ResNet weights, which fit '
      f'config.model {models.registry.TORCHVISION_LAYOUT}, not '
      f"{config.model!r}; set config.model or config.init_from=''."
    )
  if not os.path.isfile(path):
    raise ConfigError(
      f'config.init_from: no file {path}. Give the path of a torchvision '
      f"ResNet state_dict (.pth), or '' to train from scratch."
    )
