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
from ltjax.models.conv import xla_cpu_compiler_options

ARRAY_DATASETS = {'cifar10': 10, 'cifar100': 100, 'npz': None}
LARGE_DATASETS = (
  'i_naturalist2017',
  'i_naturalist2018',
  'imagenet_lt',
  'places_lt',
)


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

  source = tfds_sources.TfdsSource(
    config.dataset, data_dir=cfg.tfds_data_dir or None, download=cfg.download
  )
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
    fix = (
      'lower the imbalance factor or raise n_max'
      if cfg.imbalance
      else 'every class needs at least one training image'
    )
    raise ValueError(
      f'class {int(np.argmin(counts))} has no training images; {fix} '
      f'(or lower config.num_classes).'
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


def _pad_to(arr, size):
  pad = size - len(arr)
  return np.concatenate([arr, np.zeros((pad, *arr.shape[1:]), arr.dtype)])


class DeviceInput:
  """An array dataset kept on the device; batches made inside the step.

  Attributes: ``num_classes``, ``class_counts``, ``image_shape``,
  ``summary``, ``digest``, ``steps_per_epoch``.
  """

  def __init__(self, config, mesh):
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from ltjax.data import pipeline

    self._config = config
    data = load_array_datasets(config)
    self.num_classes = data.num_classes
    self.class_counts = data.class_counts
    self.image_shape = data.image_shape
    self.summary, self.digest = data.summary, data.digest
    self.steps_per_epoch = pipeline.steps_per_epoch(
      len(data.train), config.batch_size
    )
    replicated = NamedSharding(mesh, P())
    self._batch_sharding = NamedSharding(mesh, P('data'))
    self._train = pipeline.to_device(data.train, replicated)
    self._dev = pipeline.to_device(data.dev, replicated)
    self._eval = {}
    size = config.eval_batch_size
    for name, split in (('test', data.test), ('dev', data.dev)):
      padded = -(-len(split) // size) * size
      images = jax.device_put(_pad_to(split.image, padded), replicated)
      self._eval[name] = (images, split.label)

  def make_train_step(
    self, update, k_train, k_dev, start_step, meta_start, num_seeds=1
  ):
    """``step(state, uses_dev) -> (state, metrics)``: gather, augment, update.

    Batches are a function of ``state.step``, so ``start_step`` and
    ``meta_start`` are not needed; an unused dev batch is compiled away. With
    ``num_seeds > 1`` the state and keys carry a leading seed axis and the
    step is vmapped over it (every seed its own batches and augmentation).
    """
    del start_step, meta_start
    import jax

    from ltjax.data import pipeline

    config = self._config

    def step_fn(state, k_train, k_dev, train_data, dev_data):
      batch = pipeline.train_batch(
        train_data, k_train, state.step, config.batch_size
      )
      dev = pipeline.dev_batch(
        dev_data, jax.random.fold_in(k_dev, state.step), config.dev_batch_size
      )
      if num_seeds == 1:
        batch, dev = jax.lax.with_sharding_constraint(
          (batch, dev), self._batch_sharding
        )
      return update(state, batch, dev)

    if num_seeds > 1:
      step_fn = jax.vmap(step_fn, in_axes=(0, 0, 0, None, None))
    jitted = jax.jit(
      step_fn,
      donate_argnums=0,
      compiler_options=xla_cpu_compiler_options(),
    )
    return lambda state, uses_dev: jitted(
      state, k_train, k_dev, self._train, self._dev
    )

  def make_predict(self, apply_fn, num_seeds=1):
    """``predict(state, split) -> (logits, labels [n])`` on host: logits
    ``[n, C]``, or ``[num_seeds, n, C]`` for a vmapped state."""
    import jax

    from ltjax.data import augment

    size = self._config.eval_batch_size
    if num_seeds > 1:
      apply_fn = jax.vmap(apply_fn, in_axes=(0, 0, None))

    @jax.jit
    def logits(params, batch_stats, images, start):
      x = jax.lax.dynamic_slice_in_dim(images, start, size)
      x = augment.normalize(x)
      if num_seeds == 1:
        x = jax.lax.with_sharding_constraint(x, self._batch_sharding)
      return apply_fn(params, batch_stats, x)

    def predict(state, split):
      images, labels = self._eval[split]
      out = [
        logits(state.params, state.batch_stats, images, start)
        for start in range(0, images.shape[0], size)
      ]
      out = np.concatenate(jax.device_get(out), axis=-2)
      return out[..., : len(labels), :], labels

    return predict


class HostInput:
  """A large tfds dataset streamed through the tf.data host pipeline."""

  def __init__(self, config, mesh):
    import jax

    from ltjax.data import tf_pipeline, tfds_sources

    cfg = config.data
    self._config, self._mesh = config, mesh
    self._tfp = tf_pipeline
    self._iters = None
    source = tfds_sources.TfdsSource(
      config.dataset,
      data_dir=cfg.tfds_data_dir or None,
      dev_source=cfg.dev_source,
      places_lt_dir=cfg.places_lt_dir or None,
      download=cfg.download,
    )
    spec = source.spec
    if cfg.dev_per_class and spec.dev_split is None:
      spec = dataclasses.replace(spec, dev_per_class=cfg.dev_per_class)
    train_labels = source.labels(spec.train_split)
    num_dev = None
    if spec.dev_split is not None:
      num_dev = len(source.labels(spec.dev_split))
    split = tfds_sources.carve_dev(spec, train_labels, cfg.split_seed, num_dev)
    self.num_classes = source.num_classes
    self.class_counts = np.bincount(
      train_labels[split.train], minlength=self.num_classes
    )
    self.image_shape = (config.image_size, config.image_size, 3)
    self.digest = data_lib.LongTailSplit(
      split.train, split.dev, self.class_counts, 0.0
    ).digest()
    self._process = (jax.process_index(), jax.process_count())
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
    groups = data_lib.shot_groups(self.class_counts)
    self.summary = (
      f'{config.dataset}: {len(split.train)} training images in '
      f'{self.num_classes} classes (max {self.class_counts.max()}, min '
      f'{self.class_counts.min()}), {len(split.dev)} dev from '
      f'{split.dev_from}, {len(self._eval_labels["test"])} test; '
      f'many/medium/few-shot classes {len(groups["many"])}/'
      f'{len(groups["medium"])}/{len(groups["few"])}'
    )

  def _global(self, local):
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    sharding = NamedSharding(self._mesh, P('data'))
    return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x), local
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

  def make_train_step(
    self, update, k_train, k_dev, start_step, meta_start, num_seeds=1
  ):
    """``step(state) -> (state, metrics)`` over host batches.

    Every stage's step draws from the same two iterators, so batch ``s`` is
    the same whichever stage function consumes it. Dev batches are read only
    by meta steps, which run from ``meta_start`` (None: never) to the end.
    """
    import jax

    assert num_seeds == 1, 'checked by train.check_config'
    config = self._config
    if self._iters is None:
      seed = int(jax.random.randint(k_train, (), 0, 2**31 - 1))
      train = self._batches(self._train, config.batch_size, seed, start_step)
      dev = None
      if meta_start is not None:
        dev_seed = int(jax.random.randint(k_dev, (), 0, 2**31 - 1))
        dev_start = max(0, start_step - meta_start)
        dev = self._batches(
          self._dev_train, config.dev_batch_size, dev_seed, dev_start
        )
      self._iters = (train, dev)
    train, dev = self._iters
    jitted = jax.jit(
      update, donate_argnums=0, compiler_options=xla_cpu_compiler_options()
    )

    def step(state, uses_dev):
      batch = self._global(next(train))
      dev_batch = self._global(next(dev)) if uses_dev else None
      return jitted(state, batch, dev_batch)

    return step

  def make_predict(self, apply_fn, num_seeds=1):
    """``predict(state, split) -> (logits [n, C], labels [n])`` on host."""
    assert num_seeds == 1, 'checked by train.check_config'
    import jax
    from jax.experimental import multihost_utils
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    # Logits replicated to every process, in the global batch order: the
    # rows of process 0, then of process 1, ... as labels and masks gather.
    jitted = jax.jit(apply_fn, out_shardings=NamedSharding(self._mesh, P()))
    index, count = self._process

    def predict(state, split):
      logits, labels, mask = [], [], []
      for batch in self._tfp.eval_batches(
        self._eval[split],
        batch_size=self._config.eval_batch_size // count,
        num_examples=len(self._eval_labels[split]),
        process_index=index,
        process_count=count,
        image_size=self._config.image_size,
      ):
        images = self._global(batch['image'])
        logits.append(
          np.asarray(jitted(state.params, state.batch_stats, images))
        )
        local = (batch['label'], batch['mask'])
        if count > 1:
          local = multihost_utils.process_allgather(local, tiled=True)
        labels.append(local[0])
        mask.append(local[1])
      mask = np.concatenate(mask)
      return np.concatenate(logits)[mask], np.concatenate(labels)[mask]

    return predict


def build_input(config, mesh):
  """The :class:`DeviceInput` or :class:`HostInput` the dataset needs."""
  check_dataset_name(config.dataset)
  if config.dataset in LARGE_DATASETS:
    return HostInput(config, mesh)
  return DeviceInput(config, mesh)
