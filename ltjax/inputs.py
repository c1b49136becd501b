"""From a config to the data that feeds the trainer's step.

Array datasets (CIFAR from tfds, or ``.npz`` files) are loaded to host memory,
subsampled to the long-tailed profile with a dev set carved first
(:func:`ltjax.data.long_tail_split`), and kept on the device by
:class:`DeviceInput`. Large datasets (iNaturalist, ImageNet-LT, Places-LT)
stream through the tf.data host pipeline of :mod:`ltjax.data.tf_pipeline`
(:class:`HostInput`).

An input only feeds the step (:func:`ltjax.train_step.make_train_step`):
``train_feeds(...)`` yields one ``feed`` per step and ``batch(feed, step)``,
called inside the jit, turns it into ``(batch, dev_batch)``. For the device
input the feed is the device-resident data and the keys, and the batches
are gathered and augmented inside the step; for the host input the feed is
the sharded batches themselves. ``eval_batches(split)`` and
``prepare_eval(x)`` do the same for evaluation.
"""

from __future__ import annotations

import dataclasses
import itertools
import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ltjax import data as data_lib
from ltjax.data import augment, device_pipeline
from ltjax.data.specs import SPECS

ARRAY_DATASETS = {
  **{name: s.num_classes for name, s in SPECS.items() if s.on_device},
  'npz': None,  # config.num_classes
}
LARGE_DATASETS = tuple(name for name, s in SPECS.items() if not s.on_device)


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
  from ltjax.data import tfds_sources  # lazily: it imports TensorFlow

  source = tfds_sources.TfdsSource(
    config.dataset, data_dir=cfg.tfds_data_dir or None, download=cfg.download
  )
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
    raise ValueError(
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
    split = None
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
    raise ValueError(_empty_class_message(config, counts, split))
  digest, summary = describe_split(
    config.dataset, train_idx, dev_idx, counts, len(dev), len(test)
  )
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
  name, train_idx, dev_idx, counts, num_dev, num_test, dev_from=''
):
  """``(sha256, one-line summary)`` of a training/dev split.

  The digest is :meth:`ltjax.data.LongTailSplit.digest` of the indices and
  class counts; the summary is what the trainer logs and results.json keeps.
  """
  digest = data_lib.LongTailSplit(train_idx, dev_idx, counts, 0.0).digest()
  groups = data_lib.shot_groups(counts)
  source = f' from {dev_from}' if dev_from else ''
  summary = (
    f'{name}: {len(train_idx)} training images in {len(counts)} classes '
    f'(max {counts.max()}, min {counts.min()}), {num_dev} dev{source}, '
    f'{num_test} test; many/medium/few-shot classes '
    f'{len(groups["many"])}/{len(groups["medium"])}/{len(groups["few"])}'
  )
  return digest, summary


def _pad_to(arr, size):
  pad = size - len(arr)
  return np.concatenate([arr, np.zeros((pad, *arr.shape[1:]), arr.dtype)])


class DeviceInput:
  """An array dataset kept on the device; batches made inside the step.

  Attributes: ``num_classes``, ``class_counts``, ``image_shape``,
  ``summary``, ``digest``, ``steps_per_epoch``, ``batch_sharding``.
  """

  def __init__(self, config, mesh, arrays: ArrayDatasets | None = None):
    """Loads ``config``'s split, or keeps ``arrays`` (already split)."""
    self._config = config
    data = arrays if arrays is not None else load_array_datasets(config)
    self.num_classes = data.num_classes
    self.class_counts = data.class_counts
    self.image_shape = data.image_shape
    self.summary, self.digest = data.summary, data.digest
    self.steps_per_epoch = device_pipeline.steps_per_epoch(
      len(data.train), config.batch_size
    )
    replicated = NamedSharding(mesh, P())
    self.batch_sharding = NamedSharding(mesh, P('data'))
    self._train = device_pipeline.to_device(data.train, replicated)
    self._dev = device_pipeline.to_device(data.dev, replicated)
    self._eval = {}
    size = config.eval_batch_size
    for name, split in (('test', data.test), ('dev', data.dev)):
      padded = -(-len(split) // size) * size
      images = jax.device_put(_pad_to(split.image, padded), replicated)
      mask = np.arange(padded) < len(split)
      self._eval[name] = (images, _pad_to(split.label, padded), mask)

  # The feed: keys (with the seed axis of vmapped seeds) and the data.
  feed_axes = (0, 0, None, None)

  def train_feeds(self, k_train, k_dev, start_step, meta_start):
    """The same feed every step: batches are a function of ``state.step``,
    so neither ``start_step`` nor ``meta_start`` changes it."""
    del start_step, meta_start
    return itertools.repeat((k_train, k_dev, self._train, self._dev))

  def batch(self, feed, step):
    """``(batch, dev_batch)`` of ``step``, inside the jit; a dev batch that
    a stage does not read is compiled away."""
    k_train, k_dev, train_data, dev_data = feed
    config = self._config
    batch = device_pipeline.train_batch(
      train_data, k_train, step, config.batch_size
    )
    dev = device_pipeline.dev_batch(
      dev_data, jax.random.fold_in(k_dev, step), config.dev_batch_size
    )
    return batch, dev

  def eval_batches(self, split):
    """``(x, labels, mask)`` per evaluation batch of ``split``."""
    images, labels, mask = self._eval[split]
    size = self._config.eval_batch_size
    for start in range(0, images.shape[0], size):
      end = start + size
      yield (images, start), labels[start:end], mask[start:end]

  def prepare_eval(self, x):
    images, start = x
    batch = jax.lax.dynamic_slice_in_dim(
      images, start, self._config.eval_batch_size
    )
    return augment.normalize(batch)


class HostInput:
  """A large tfds dataset streamed through the tf.data host pipeline."""

  feed_axes = None  # one seed only (checked with the config)

  def __init__(self, config, mesh):
    from ltjax.data import tf_pipeline, tfds_sources  # import TensorFlow

    cfg = config.data
    self._config = config
    self._tfp = tf_pipeline
    source = tfds_sources.TfdsSource(
      config.dataset,
      data_dir=cfg.tfds_data_dir or None,
      dev_source=cfg.dev_source,
      places_lt_dir=cfg.places_lt_dir or None,
      download=cfg.download,
      dev_per_class=cfg.dev_per_class,
    )
    spec = source.spec
    split = source.dev_split(cfg.split_seed)
    train_labels = source.labels(spec.train_split)
    self.num_classes = source.num_classes
    self.class_counts = np.bincount(
      train_labels[split.train], minlength=self.num_classes
    )
    self.image_shape = (config.image_size, config.image_size, 3)
    self._process = (jax.process_index(), jax.process_count())
    self.batch_sharding = NamedSharding(mesh, P('data'))
    self.steps_per_epoch = tf_pipeline.steps_per_epoch(
      len(split.train), config.batch_size
    )
    if self.steps_per_epoch == 0:
      raise ValueError(
        f'batch size {config.batch_size} exceeds the {len(split.train)} '
        'training examples; lower the batch size.'
      )
    self._train = (
      source.dataset(spec.train_split, split.train, decode=False),
      len(split.train),
    )
    self._dev_train = (
      source.dataset(split.dev_from, split.dev, decode=False),
      len(split.dev),
    )
    self._eval = {
      'test': source.dataset(spec.test_split, decode=False),
      'dev': self._dev_train[0],
    }
    self._eval_labels = {
      'test': source.labels(spec.test_split),
      'dev': source.labels(split.dev_from)[split.dev],
    }
    self.digest, self.summary = describe_split(
      config.dataset,
      split.train,
      split.dev,
      self.class_counts,
      len(split.dev),
      len(self._eval_labels['test']),
      dev_from=split.dev_from,
    )

  def _global(self, local):
    return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(self.batch_sharding, x),
      local,
    )

  def _batches(self, data, batch_size, seed, start_step):
    ds, n = data
    index, count = self._process
    return self._tfp.train_batches(
      ds,
      batch_size=batch_size // count,
      seed=seed,
      num_examples=n,
      start_step=start_step,
      process_index=index,
      process_count=count,
      image_size=self._config.image_size,
    )

  def train_feeds(self, k_train, k_dev, start_step, meta_start):
    """Sharded ``(batch, dev_batch)`` per step from ``start_step`` on.

    Dev batches are read only from ``meta_start`` (None: never), the first
    step of the meta stage, so the dev stream resumes at ``step -
    meta_start``.
    """
    config = self._config
    seed = int(jax.random.randint(k_train, (), 0, 2**31 - 1))
    train = self._batches(self._train, config.batch_size, seed, start_step)
    dev = None
    if meta_start is not None:
      dev_seed = int(jax.random.randint(k_dev, (), 0, 2**31 - 1))
      dev_start = max(0, start_step - meta_start)
      dev = self._batches(
        self._dev_train, config.dev_batch_size, dev_seed, dev_start
      )
    for step in itertools.count(start_step):
      uses_dev = meta_start is not None and step >= meta_start
      yield (
        self._global(next(train)),
        self._global(next(dev)) if uses_dev else None,
      )

  @staticmethod
  def batch(feed, step):
    del step
    return feed

  def eval_batches(self, split):
    """Sharded images with labels and masks gathered from every process, in
    the global batch order (the rows of process 0, then of process 1...)."""
    index, count = self._process
    for batch in self._tfp.eval_batches(
      self._eval[split],
      batch_size=self._config.eval_batch_size // count,
      num_examples=len(self._eval_labels[split]),
      process_index=index,
      process_count=count,
      image_size=self._config.image_size,
    ):
      local = (batch['label'], batch['mask'])
      if count > 1:
        local = multihost_utils.process_allgather(local, tiled=True)
      yield self._global(batch['image']), local[0], local[1]

  @staticmethod
  def prepare_eval(x):
    return x


def build_input(config, mesh):
  """The :class:`DeviceInput` or :class:`HostInput` the dataset needs."""
  check_dataset_name(config.dataset)
  if config.dataset in LARGE_DATASETS:
    return HostInput(config, mesh)
  return DeviceInput(config, mesh)
