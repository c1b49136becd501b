"""What each benchmark dataset is: classes, splits, dev rule (no TensorFlow).

:data:`SPECS` is the one record of the datasets ltjax knows; the trainer's
inputs (:mod:`ltjax.inputs`) and the tfds sources
(:mod:`ltjax.data.tfds_sources`) both read it. The dev sizes are the paper's
(Jamal et al., CVPR 2020, Sec. 5).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ltjax.data.arrays import balanced_holdout
from ltjax.errors import ConfigError

_TFDS_BUILD = (
  'Prepare it on a machine with internet: `tfds build {tfds} '
  '--data_dir=DIR` (or tfds.builder({tfds!r}, data_dir=DIR)'
  '.download_and_prepare()), then copy DIR/{tfds} to {data_dir}/{tfds}.'
)
_PREPARE = {
  'cifar': _TFDS_BUILD,
  'inat': _TFDS_BUILD
  + (
    ' The builder downloads the iNaturalist archives itself (URLs in '
    'tensorflow_datasets; hundreds of GB); it has no manual_dir step.'
  ),
  'imagenet_lt': _TFDS_BUILD
  + (
    ' It needs ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (from '
    'image-net.org, after registering) in the manual_dir, by default '
    'DIR/downloads/manual (or `tfds build imagenet_lt --manual_dir=M`), and '
    'internet for the two ImageNet-LT subset lists it fetches.'
  ),
  'places': _TFDS_BUILD
  + (
    ' It downloads the Places365-Standard 256x256 images (train_256_'
    'places365standard.tar, val_256.tar, test_256.tar) from '
    'data.csail.mit.edu.'
  ),
}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """How one benchmark is read and where its dev set comes from.

  Attributes:
    name: ltjax name.
    tfds_name: tfds dataset backing it.
    num_classes: number of classes ``C``.
    train_split: split the training set (and a carved dev set) come from.
    test_split: split reported as the test set.
    dev_per_class: dev images per class.
    dev_split: split that *is* the dev set, or None to carve it from
      ``train_split``.
    splits: splits the source serves.
    prepare: how to prepare the tfds dataset (a format string).
    on_device: small enough (CIFAR) to be loaded as arrays and kept on the
      device; the others stream through the tf.data host pipeline.
  """

  name: str
  tfds_name: str
  num_classes: int
  train_split: str
  test_split: str
  dev_per_class: int
  dev_split: str | None
  splits: tuple[str, ...]
  prepare: str
  on_device: bool = False


SPECS = {
  s.name: s
  for s in [
    DatasetSpec(
      'cifar10', 'cifar10', 10, 'train', 'test', 10, None,
      ('train', 'test'), _PREPARE['cifar'], on_device=True,
    ),
    DatasetSpec(
      'cifar100', 'cifar100', 100, 'train', 'test', 10, None,
      ('train', 'test'), _PREPARE['cifar'], on_device=True,
    ),
    DatasetSpec(
      'i_naturalist2017', 'i_naturalist2017', 5089, 'train', 'validation',
      5, None, ('train', 'validation'), _PREPARE['inat'],
    ),
    DatasetSpec(
      'i_naturalist2018', 'i_naturalist2018', 8142, 'train', 'validation',
      2, None, ('train', 'validation'), _PREPARE['inat'],
    ),
    DatasetSpec(
      'imagenet_lt', 'imagenet_lt', 1000, 'train', 'test', 20,
      'validation', ('train', 'validation', 'test'), _PREPARE['imagenet_lt'],
    ),
    DatasetSpec(
      'places_lt', 'places365_small', 365, 'train', 'test', 10, None,
      ('train', 'val', 'test'), _PREPARE['places'],
    ),
  ]
}  # fmt: skip
DEV_SOURCES = ('validation', 'carve')

# The names config.dataset takes. Array datasets are loaded whole and kept on
# the device, {name: classes}: the on-device specs, and 'npz' (the user's own
# .npz files, config.num_classes classes). The others stream from tfds.
ARRAY_DATASETS = {
  **{name: s.num_classes for name, s in SPECS.items() if s.on_device},
  'npz': None,
}
LARGE_DATASETS = tuple(name for name, s in SPECS.items() if not s.on_device)
DATASETS = (*ARRAY_DATASETS, *LARGE_DATASETS)


def check_dataset_name(name: str) -> None:
  """Raises :class:`ltjax.errors.ConfigError` unless ``name`` is one of
  :data:`DATASETS`."""
  if name not in DATASETS:
    raise ConfigError(
      f'unknown dataset {name!r} (config.dataset); choose one of '
      f'{sorted(ARRAY_DATASETS) + list(LARGE_DATASETS)}.'
    )


def get_spec(name: str, dev_source: str = 'validation') -> DatasetSpec:
  """The :class:`DatasetSpec` of ``name``.

  Args:
    name: one of :data:`SPECS`.
    dev_source: ImageNet-LT only: ``'validation'`` takes its 20-per-class
      validation split as the dev set, ``'carve'`` carves 20 per class from
      train instead.

  Raises:
    ConfigError: unknown name or dev_source.
  """
  if name not in SPECS:
    raise ConfigError(f'unknown dataset {name!r}; known: {sorted(SPECS)}.')
  if dev_source not in DEV_SOURCES:
    raise ConfigError(
      f'dev_source must be one of {DEV_SOURCES}, got {dev_source!r}.'
    )
  spec = SPECS[name]
  if dev_source == 'carve' and spec.dev_split is not None:
    spec = dataclasses.replace(spec, dev_split=None)
  return spec


@dataclasses.dataclass(frozen=True)
class DevSplit:
  """Training examples and the balanced dev set, as indices.

  Attributes:
    train: sorted int64 indices into the spec's ``train_split``.
    dev: sorted int64 indices into the split named ``dev_from``.
    dev_from: the split ``dev`` indexes.
  """

  train: np.ndarray
  dev: np.ndarray
  dev_from: str


def carve_dev(
  spec: DatasetSpec, train_labels, seed: int = 0, num_dev: int | None = None
) -> DevSplit:
  """The dev rule of ``spec`` applied to the labels of its train split.

  Carves ``spec.dev_per_class`` random examples of every class from train
  (:func:`ltjax.data.arrays.balanced_holdout`), or, when ``spec.dev_split``
  is set, keeps all of train and takes all ``num_dev`` records of that split
  as the dev set.

  Args:
    spec: the dataset's :class:`DatasetSpec`.
    train_labels: ``[N]`` labels of ``spec.train_split`` in record order.
    seed: seed of the per-class draws.
    num_dev: size of ``spec.dev_split``; needed only when that is set.

  Raises:
    ValueError: a class has fewer than ``dev_per_class`` examples.
  """
  n = len(train_labels)
  if spec.dev_split is not None:
    if num_dev is None:
      raise ValueError(f'{spec.name}: pass num_dev, the size of its dev split.')
    return DevSplit(np.arange(n), np.arange(num_dev), spec.dev_split)
  dev, train = balanced_holdout(
    train_labels, spec.num_classes, spec.dev_per_class, seed
  )
  return DevSplit(train, dev, spec.train_split)
