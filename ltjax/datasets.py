"""From a config to its dataset: the names, and array datasets as splits.

Array datasets (CIFAR from tfds, or ``.npz`` files) are loaded to host memory,
checked, and subsampled to the long-tailed profile with a dev set carved first
(:func:`ltjax.data.long_tail_split`); :class:`ltjax.inputs.DeviceInput` then
keeps them on the device. Large datasets (iNaturalist, ImageNet-LT, Places-LT)
are only named here: they stream through :class:`ltjax.inputs.HostInput`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np

from ltjax import data as data_lib
from ltjax.data.specs import ARRAY_DATASETS as ARRAY_DATASETS
from ltjax.data.specs import LARGE_DATASETS as LARGE_DATASETS
from ltjax.data.specs import check_dataset_name as check_dataset_name
from ltjax.errors import ConfigError, DataError


@dataclasses.dataclass
class ArrayDatasets:
  """The three splits of an array dataset, in host memory."""

  train: data_lib.ArrayData
  dev: data_lib.ArrayData
  test: data_lib.ArrayData
  num_classes: int
  class_counts: np.ndarray
  digest: str
  summary: str

  @property
  def image_shape(self) -> tuple[int, ...]:
    return self.train.image.shape[1:]


def _npz_path(cfg, split):
  path = cfg.get(f'{split}_file') or ''
  if path and not os.path.isabs(path) and cfg.get('dir'):
    path = os.path.join(cfg.dir, path)
  return path


def _load_full_splits(config):
  """``(train, test or None, dev or None, num_classes)`` before subsampling."""
  cfg = config.data
  if config.dataset == 'npz':
    num_classes = config.num_classes
    train_path = _npz_path(cfg, 'train')
    if not train_path:
      raise ConfigError(
        "dataset 'npz' needs config.data.train_file (a .npz with keys image "
        'and label), optionally relative to config.data.dir.'
      )
    splits = []
    for split in ('train', 'test', 'dev'):
      path = _npz_path(cfg, split)
      splits.append(
        data_lib.load_npz(path, num_classes=num_classes) if path else None
      )
    return (*splits, num_classes)
  from ltjax.data import tfds_sources  # lazily: it imports TensorFlow

  source = tfds_sources.from_config(config)
  train, test = source.arrays('train'), source.arrays('test')
  return train, test, None, source.num_classes


def check_split_images(**splits):
  """The splits (``None`` passes), grayscale ones with the channel repeated
  to RGB (the normalization and the models read 3 channels); refuses splits
  whose image sizes differ."""
  out = []
  for split in splits.values():
    if split is not None and split.image.shape[-1] == 1:
      split = data_lib.ArrayData(
        np.repeat(split.image, 3, axis=-1), split.label
      )
    out.append(split)
  shapes = {
    name: split.image.shape[1:]
    for name, split in zip(splits, out, strict=True)
    if split is not None
  }
  if len(set(shapes.values())) > 1:
    raise DataError(
      'the splits hold images of different sizes '
      f'({", ".join(f"{k}: {v[0]}x{v[1]}" for k, v in shapes.items())}); '
      'resize them to one size before training.'
    )
  return out


def load_array_datasets(config) -> ArrayDatasets:
  """Loads, checks and subsamples an array dataset as the config says.

  ``config.data`` fields: ``imbalance`` (0: keep the training set as it is,
  e.g. data that is long-tailed already), ``profile``, ``n_max`` (0: the
  official ``(N - dev C) / C``), ``dev_per_class`` (carved from the training
  set before subsampling unless a dev file is given), ``test_per_class``
  (carved from the training set first when there is no test split, as for
  the offline CIFAR-10 file) and ``split_seed``.
  """
  cfg = config.data
  train, test, dev, num_classes = _load_full_splits(config)
  train, test, dev = check_split_images(train=train, test=test, dev=dev)
  if test is None:
    if not cfg.test_per_class:
      raise ConfigError(
        'no test split: give config.data.test_file or carve a balanced test '
        'set from the training file with config.data.test_per_class > 0.'
      )
    held, rest = data_lib.balanced_holdout(
      train.label, num_classes, cfg.test_per_class, seed=cfg.split_seed
    )
    train, test = train.subset(rest), train.subset(held)
  dev_per_class = 0 if dev is not None else cfg.dev_per_class
  if cfg.imbalance:
    split = data_lib.long_tail_split(
      train.label,
      num_classes,
      cfg.imbalance,
      dev_per_class=dev_per_class,
      profile=cfg.profile,
      n_max=cfg.n_max or None,
      seed=cfg.split_seed,
    )
    train_idx, dev_idx = split.train, split.dev
  else:
    split = None
    dev_idx, train_idx = data_lib.balanced_holdout(
      train.label, num_classes, dev_per_class, seed=cfg.split_seed
    )
  if dev is None:
    dev = train.subset(dev_idx)
  if len(dev) == 0:
    raise ConfigError(
      'the dev set is empty: set config.data.dev_per_class > 0 or give '
      'config.data.dev_file.'
    )
  train = train.subset(train_idx)
  counts = np.bincount(train.label, minlength=num_classes)
  if counts.min() == 0:
    raise DataError(_empty_class_message(config, counts, split))
  digest, summary = describe_split(
    config.dataset, train_idx, dev_idx, counts, len(dev), len(test),
    content=(train.image, train.label, dev.image, dev.label),
  )  # fmt: skip
  return ArrayDatasets(train, dev, test, num_classes, counts, digest, summary)


def _empty_class_message(config, counts, split) -> str:
  c = int(np.argmin(counts))
  if split is not None:  # the profile rounded the smallest classes to 0
    largest = data_lib.largest_imbalance(
      split.n_max, config.num_classes, config.data.profile
    )
    if largest < 1:
      return (
        f'class {c} gets no training images: n_max={split.n_max:g} is below '
        f'1. Give more training images per class, or a larger '
        f'config.data.n_max.'
      )
    return (
      f'class {c} gets no training images: with n_max={split.n_max:g} the '
      f'{config.data.profile} profile gives the smallest classes '
      f'int(n_max / imbalance) = 0 images at imbalance '
      f'{config.data.imbalance:g}. Set config.data.imbalance to at most '
      f'{largest}, the most this data allows.'
    )
  return (
    f'class {c} has no training images (config.data.imbalance=0 keeps the '
    f'training file as it is): every class in [0, config.num_classes) needs '
    f'at least one. Add images of class {c}, or relabel the data without it.'
  )


def describe_split(
  name, train_idx, dev_idx, counts, num_dev, num_test, dev_from='', content=()
):
  """``(sha256, one-line summary)`` of a training/dev split.

  The digest is :meth:`ltjax.data.LongTailSplit.digest` of the indices,
  extended with the bytes, dtype and shape of each array of ``content``
  (the training and dev images and labels of array data, in memory anyway:
  changed pixels under the same labels change it). The host pipeline's
  images are never all in memory: its digest covers the indices only. The
  summary is what the trainer logs and results.json keeps.
  """
  digest = data_lib.LongTailSplit(train_idx, dev_idx, counts, 0.0).digest()
  if content:
    h = hashlib.sha256(digest.encode())
    for a in content:
      a = np.ascontiguousarray(a)
      h.update(f'|{a.dtype.str}{a.shape}|'.encode())
      h.update(memoryview(a).cast('B'))
    digest = h.hexdigest()
  groups = data_lib.shot_groups(counts)
  source = f' from {dev_from}' if dev_from else ''
  summary = (
    f'{name}: {len(train_idx)} training images in {len(counts)} classes '
    f'(max {counts.max()}, min {counts.min()}), {num_dev} dev{source}, '
    f'{num_test} test; many/medium/few-shot classes '
    f'{len(groups["many"])}/{len(groups["medium"])}/{len(groups["few"])}'
  )
  return digest, summary
