"""From a config to the training, dev and test data of a run.

Array datasets (CIFAR from tfds, or ``.npz`` files) are loaded to host memory,
subsampled to the long-tailed profile with a dev set carved first
(:func:`ltjax.data.long_tail_split`), and handed to the trainer, which keeps
them on the device. Large datasets (iNaturalist, ImageNet-LT, Places-LT) go
through the tf.data host pipeline of :mod:`ltjax.data.tf_pipeline`.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from ltjax import data as data_lib

ARRAY_DATASETS = {'cifar10': 10, 'cifar100': 100, 'npz': None}
LARGE_DATASETS = ('inat2017', 'inat2018', 'imagenet_lt', 'places_lt')


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


def check_dataset_name(name: str) -> None:
  known = sorted(ARRAY_DATASETS) + list(LARGE_DATASETS)
  if name not in known:
    raise ValueError(
      f'unknown dataset {name!r} (config.dataset); choose one of {known}.'
    )


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
      raise ValueError(
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
  from ltjax.data import tfds_sources  # imports TensorFlow

  source = tfds_sources.TfdsSource(config.dataset, data_dir=cfg.tfds_data_dir)
  train, test = source.arrays('train'), source.arrays('test')
  return train, test, None, source.num_classes


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
  if test is None:
    if not cfg.test_per_class:
      raise ValueError(
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
    dev_idx, train_idx = data_lib.balanced_holdout(
      train.label, num_classes, dev_per_class, seed=cfg.split_seed
    )
  if dev is None:
    dev = train.subset(dev_idx)
  if len(dev) == 0:
    raise ValueError(
      'the dev set is empty: set config.data.dev_per_class > 0 or give '
      'config.data.dev_file.'
    )
  train = train.subset(train_idx)
  counts = np.bincount(train.label, minlength=num_classes)
  if counts.min() == 0:
    raise ValueError(
      f'class {int(np.argmin(counts))} has no training images; lower the '
      'imbalance factor or raise n_max.'
    )
  digest = data_lib.LongTailSplit(train_idx, dev_idx, counts, 0.0).digest()
  groups = data_lib.shot_groups(counts)
  summary = (
    f'{config.dataset}: {len(train)} training images in {num_classes} '
    f'classes (max {counts.max()}, min {counts.min()}), {len(dev)} dev, '
    f'{len(test)} test; many/medium/few-shot classes '
    f'{len(groups["many"])}/{len(groups["medium"])}/{len(groups["few"])}'
  )
  return ArrayDatasets(train, dev, test, num_classes, counts, digest, summary)
