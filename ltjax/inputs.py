"""From a config to the data that feeds the trainer's step.

Array datasets, loaded and split by :mod:`ltjax.datasets`, are kept on the
device by :class:`DeviceInput`. Large datasets (iNaturalist, ImageNet-LT,
Places-LT) stream through the tf.data host pipeline of
:mod:`ltjax.data.tf_pipeline` (:class:`HostInput`).

An input (the protocol :class:`Input`) only feeds the step
(:func:`ltjax.train_step.make_train_step`): ``train_feeds(...)`` yields one
``feed`` per step and ``batch(feed, step)``,
called inside the jit, turns it into ``(batch, dev_batch)``. For the device
input the feed is the device-resident data and the keys, and the batches
are gathered and augmented inside the step; for the host input the feed is
the sharded batches themselves. ``eval_batches(split)`` and
``prepare_eval(x)`` do the same for evaluation.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ltjax import datasets, phases
from ltjax.data import augment, device_pipeline
from ltjax.errors import ConfigError


@runtime_checkable
class Input(Protocol):
  """What feeds the trainer's step: :class:`DeviceInput` (arrays kept on
  the device) and :class:`HostInput` (a tf.data host pipeline) are the two.

  Attributes:
    num_classes, class_counts: ``C`` and the training images per class.
    image_shape: ``(H, W, 3)`` of the images the model sees.
    summary, digest: the split in words, and its sha256.
    num_train_examples, steps_per_epoch: the training set and its epoch.
    batch_sharding: how a batch lies over the mesh (``P('data')``).
    feed_axes: ``jax.vmap``'s ``in_axes`` of a feed over the state's seed
      axis (:func:`ltjax.train_step.over_seeds`).
  """

  num_classes: int
  class_counts: np.ndarray
  image_shape: tuple[int, ...]
  summary: str
  digest: str
  num_train_examples: int
  steps_per_epoch: int
  batch_sharding: NamedSharding
  feed_axes: Any

  def train_feeds(
    self, k_train, k_dev, start_step, meta_start, samplers=()
  ) -> Iterator:
    """One feed per step from ``start_step`` on; ``k_train``, ``k_dev``
    with the seed axis. ``meta_start``: the first step that reads dev
    batches (None: never); ``samplers``: ``((first_step, sampler), ...)``."""

  def batch(self, feed, step, sampler='instance'):
    """``(batch, dev_batch)`` of ``step``, inside the jit."""

  def eval_batches(self, split) -> Iterator:
    """``(x, labels, mask)`` per evaluation batch of ``split`` ('test' or
    'dev'), on host."""

  def prepare_eval(self, x):
    """The images of ``x``, inside the jit."""


def _pad_to(arr, size):
  pad = size - len(arr)
  return np.concatenate([arr, np.zeros((pad, *arr.shape[1:]), arr.dtype)])


class DeviceInput:
  """An array dataset kept on the device; batches made inside the step.

  Attributes: ``num_classes``, ``class_counts``, ``image_shape``,
  ``summary``, ``digest``, ``num_train_examples``, ``steps_per_epoch``,
  ``batch_sharding``.
  """

  def __init__(
    self, config, mesh, arrays: datasets.ArrayDatasets | None = None
  ):
    """Loads ``config``'s split, or keeps ``arrays`` (already split)."""
    self._config = config
    data = (
      arrays if arrays is not None else datasets.load_array_datasets(config)
    )
    self.num_classes = data.num_classes
    self.class_counts = data.class_counts
    self.image_shape = data.image_shape
    self.summary, self.digest = data.summary, data.digest
    self.num_train_examples = len(data.train)
    self.steps_per_epoch = device_pipeline.steps_per_epoch(
      len(data.train), config.batch_size
    )
    replicated = NamedSharding(mesh, P())
    self.batch_sharding = NamedSharding(mesh, P('data'))
    self._train_labels = np.asarray(data.train.label)
    self._train = device_pipeline.to_device(data.train, replicated)
    self._dev = device_pipeline.to_device(data.dev, replicated)
    self._eval = {}
    size = config.eval_batch_size
    for name, split in (('test', data.test), ('dev', data.dev)):
      padded = -(-len(split) // size) * size
      images = jax.device_put(_pad_to(split.image, padded), replicated)
      mask = np.arange(padded) < len(split)
      self._eval[name] = (images, _pad_to(split.label, padded), mask)

  # The feed: keys (with the seed axis) and the data.
  feed_axes = (0, 0, None, None)

  def train_feeds(self, k_train, k_dev, start_step, meta_start, samplers=()):
    """The same feed every step: batches are a function of ``state.step``
    (and the stage's sampler, which the step passes to :meth:`batch`), so
    neither ``start_step``, ``meta_start`` nor ``samplers`` changes it."""
    del start_step, meta_start, samplers
    return itertools.repeat((k_train, k_dev, self._train, self._dev))

  def batch(self, feed, step, sampler='instance'):
    """``(batch, dev_batch)`` of ``step``, inside the jit; a dev batch that
    a stage does not read is compiled away. ``sampler``: one of
    :data:`ltjax.methods.SAMPLERS`."""
    k_train, k_dev, train_data, dev_data = feed
    config = self._config
    probabilities = None
    if sampler != 'instance':
      probabilities = jnp.asarray(
        device_pipeline.sampling_probabilities(self._train_labels, sampler),
        jnp.float32,
      )
    batch = device_pipeline.train_batch(
      train_data, k_train, step, config.batch_size, probabilities
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

  feed_axes = None  # the same batches for every seed

  def __init__(self, config, mesh):
    from ltjax.data import tf_pipeline, tfds_sources  # import TensorFlow

    self._config = config
    self._tfp = tf_pipeline
    self.phases = {}  # seconds per start-up phase (ltjax.phases)
    with phases.phase('open the tfds dataset', self.phases):
      source = tfds_sources.from_config(config)
    with phases.phase('read the labels', self.phases):
      train_labels = source.labels(source.spec.train_split)
      test_labels = source.labels(source.spec.test_split)
    with phases.phase('carve the dev split', self.phases):
      split = source.dev_split(config.data.split_seed)
    self._describe(split, source.num_classes, train_labels, test_labels)
    self._process = (jax.process_index(), jax.process_count())
    self.batch_sharding = NamedSharding(mesh, P('data'))
    with phases.phase('build the tf.data datasets', self.phases):
      self._build_datasets(source, split, test_labels)

  def _describe(self, split, num_classes, train_labels, test_labels):
    """What follows from the dev split: the training set's classes and
    counts, the steps per epoch, the split's digest and summary."""
    config = self._config
    self.num_classes = num_classes
    self._train_labels = train_labels[split.train]
    self.class_counts = np.bincount(
      self._train_labels, minlength=self.num_classes
    )
    self.image_shape = (config.image_size, config.image_size, 3)
    self.num_train_examples = len(split.train)
    self.steps_per_epoch = self._tfp.steps_per_epoch(
      len(split.train), config.batch_size
    )
    if self.steps_per_epoch == 0:
      raise ConfigError(
        f'batch size {config.batch_size} exceeds the {len(split.train)} '
        'training examples; lower the batch size.'
      )
    self.digest, self.summary = datasets.describe_split(
      config.dataset,
      split.train,
      split.dev,
      self.class_counts,
      len(split.dev),
      len(test_labels),
      dev_from=split.dev_from,
    )

  def _build_datasets(self, source, split, test_labels):
    """The tf.data datasets of training, dev and evaluation (undecoded)."""
    self._train = (
      source.dataset(source.spec.train_split, split.train, decode=False),
      len(split.train),
    )
    self._dev_train = (
      source.dataset(split.dev_from, split.dev, decode=False),
      len(split.dev),
    )
    self._eval = {
      'test': source.dataset(source.spec.test_split, decode=False),
      'dev': self._dev_train[0],
    }
    self._eval_labels = {
      'test': test_labels,
      'dev': source.labels(split.dev_from)[split.dev],
    }

  def _global(self, local):
    return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(self.batch_sharding, x),
      local,
    )

  def _batches(self, data, batch_size, seed, start_step, sampler='instance'):
    ds, n = data
    index, count = self._process
    probabilities = None
    if sampler != 'instance':
      probabilities = device_pipeline.sampling_probabilities(
        self._train_labels, sampler
      )
    return self._tfp.train_batches(
      ds,
      batch_size=batch_size // count,
      seed=seed,
      num_examples=n,
      start_step=start_step,
      process_index=index,
      process_count=count,
      image_size=self._config.image_size,
      probabilities=probabilities,
    )

  def train_feeds(self, k_train, k_dev, start_step, meta_start, samplers=()):
    """Sharded ``(batch, dev_batch)`` per step from ``start_step`` on.

    Dev batches are read only from ``meta_start`` (None: never), the first
    step of the meta stage, so the dev stream resumes at ``step -
    meta_start``. ``samplers``: ``((first_step, sampler), ...)`` in step
    order (:data:`ltjax.methods.SAMPLERS`; none: instances throughout); the
    training stream starts anew at each, positioned by the global step.
    """
    config = self._config
    # The streams draw from the first seed's keys (a host input runs one
    # seed: ltjax.config_check), fed to every seed of the vmapped step.
    k_train, k_dev = k_train[0], k_dev[0]
    seed = int(jax.random.randint(k_train, (), 0, 2**31 - 1))
    starts = dict(samplers)

    def sampler_at(step):
      return max(
        ((s, v) for s, v in starts.items() if s <= step),
        default=(0, 'instance'),
      )[1]

    def train_stream(step):
      return self._batches(
        self._train, config.batch_size, seed, step, sampler_at(step)
      )

    train = train_stream(start_step)
    dev = None
    if meta_start is not None:
      dev_seed = int(jax.random.randint(k_dev, (), 0, 2**31 - 1))
      dev_start = max(0, start_step - meta_start)
      dev = self._batches(
        self._dev_train, config.dev_batch_size, dev_seed, dev_start
      )
    for step in itertools.count(start_step):
      if step != start_step and sampler_at(step) != sampler_at(step - 1):
        train = train_stream(step)
      uses_dev = meta_start is not None and step >= meta_start
      yield (
        self._global(next(train)),
        self._global(next(dev)) if uses_dev else None,
      )

  @staticmethod
  def batch(feed, step, sampler='instance'):
    """The feed itself: the host pipeline samples instances (a config with
    another stage sampler is refused by :mod:`ltjax.config_check`)."""
    del step, sampler
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


def build_input(config, mesh) -> Input:
  """The :class:`DeviceInput` or :class:`HostInput` the dataset needs."""
  datasets.check_dataset_name(config.dataset)
  if config.dataset in datasets.LARGE_DATASETS:
    return HostInput(config, mesh)
  return DeviceInput(config, mesh)
