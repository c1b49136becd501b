"""TensorFlow Datasets sources of the paper's benchmarks, strictly offline.

:data:`ltjax.data.specs.SPECS` records, per benchmark, the tfds dataset, the
number of classes, the train and test splits and how the balanced development
set is made (Jamal et al., CVPR 2020, Sec. 5)::

  name              tfds name         C     test split  dev set (per class)
  cifar10           cifar10           10    test        10, carved from train
  cifar100          cifar100          100   test        10, carved from train
  i_naturalist2017  i_naturalist2017  5089  validation  5, carved from train
  i_naturalist2018  i_naturalist2018  8142  validation  2, carved from train
  imagenet_lt       imagenet_lt       1000  test        20: the validation
                                                        split, or carved
  places_lt         places365_small   365   test        10, carved from train

(For CIFAR the caller carves the dev set with
:func:`ltjax.data.long_tail_split`, before the long-tailed subsampling.)

Places-LT is backed by tfds ``places365_small``, which stores each image's
``filename`` (``data_256/a/airfield/00000001.jpg`` for train,
``val_256/Places365_val_00000001.jpg`` for validation), the very paths of the
Places-LT list files (``Places_LT_{train,val,test}.txt`` of the OLTR release,
lines ``path label``): its ``train`` and ``val`` splits select records of
Places365 ``train`` by name, ``test`` those of Places365 ``validation``
(:mod:`ltjax.data.places_lt`; after the first use, from a copy of just the
listed records).

A split's labels (and Places365's file names) are read from every record's
bytes once and then cached as ``.npy`` files in ``cache_dir`` (default
:func:`ltjax.data.tfds_cache.default_cache_dir`), keyed by a fingerprint of
the split's files (names, sizes, modification times), so a changed dataset
is read again and the next start of a run does not read the images.

Offline: datasets are only read, never downloaded (no ``download_and_prepare``,
``try_gcs=False``), and tfds's look-ups of pre-computed metadata on
``gs://tfds-data`` are switched off before a builder is made. A dataset that
is not prepared fails at once with instructions.

This module imports TensorFlow; ``ltjax`` and ``ltjax.data`` never import it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging
from tensorflow_datasets.core.utils import gcs_utils

from ltjax import files
from ltjax.data import places_lt, tfds_cache
from ltjax.data.arrays import ArrayData, from_arrays
from ltjax.data.places_lt import PLACES_LT_LISTS as PLACES_LT_LISTS
from ltjax.data.specs import DEV_SOURCES as DEV_SOURCES
from ltjax.data.specs import SPECS as SPECS
from ltjax.data.specs import DatasetSpec as DatasetSpec
from ltjax.data.specs import DevSplit as DevSplit
from ltjax.data.specs import carve_dev as carve_dev
from ltjax.data.specs import get_spec as get_spec
from ltjax.data.tf_pipeline import hide_gpus_from_tf
from ltjax.errors import MissingFileError

hide_gpus_from_tf()

# A selection of at most this fraction of a split's records is read from a
# copy of just those records (TfdsSource._stream); a larger one is filtered
# from the split itself, since a copy would save little and cost its size.
COPY_FRACTION = 0.5


def disable_gcs() -> None:
  """Switches off tfds's look-ups on ``gs://tfds-data``.

  ``tfds.builder`` of a dataset without local metadata asks GCS for its
  ``dataset_info`` (``DatasetInfo.initialize_from_bucket``), and
  ``download_and_prepare`` may copy a prepared dataset from there. Both are
  gated by ``gcs_utils._is_gcs_disabled`` (True by default in tfds 4.9.10,
  but other code, e.g. ``tfds.testing``, may flip it); this pins it.
  """
  gcs_utils._is_gcs_disabled = True


def _read_config():
  options = tf.data.Options()
  options.deterministic = True
  return tfds.ReadConfig(options=options, shuffle_seed=0)


def from_config(config) -> TfdsSource:
  """The :class:`TfdsSource` that ``config`` reads (``config.dataset`` and
  the fields of ``config.data``): the one place a config becomes one."""
  cfg = config.data
  return TfdsSource(
    config.dataset,
    data_dir=cfg.tfds_data_dir or None,
    dev_source=cfg.dev_source,
    places_lt_dir=cfg.places_lt_dir or None,
    download=cfg.download,
    dev_per_class=cfg.dev_per_class,
    cache_dir=tfds_cache.tfds_cache_dir(cfg),
  )


def write_copy(stream, kept, path, features) -> None:
  """Writes the records numbered ``kept`` of ``stream`` (``(record number,
  example)`` pairs, images undecoded) to the TFRecord ``path``, as stored."""
  table = tf.lookup.StaticHashTable(
    tf.lookup.KeyValueTensorInitializer(kept, tf.ones_like(kept)), 0
  )

  # Not through AutoGraph: it would re-read this file's source, and plain
  # TensorFlow ops need no conversion.
  @tf.autograph.experimental.do_not_convert
  def listed(i, ex):
    del ex
    return table.lookup(i) > 0

  @tf.autograph.experimental.do_not_convert
  def example(i, ex):
    del i
    return ex

  ds = stream.filter(listed).map(example)
  with files.atomic_file(path) as tmp:
    with tf.io.TFRecordWriter(tmp) as writer:
      for ex in ds.as_numpy_iterator():
        ex = {**ex, 'image': io.BytesIO(ex['image'])}  # stored bytes
        writer.write(features.serialize_example(ex))


def read_copy(path, kept, features):
  """``(record number, example)`` pairs of a :func:`write_copy` file,
  images undecoded, as the stream it was written from gives them."""
  decoders = {'image': tfds.decode.SkipDecoding()}
  examples = tf.data.TFRecordDataset(path).map(
    tf.autograph.experimental.do_not_convert(
      lambda raw: features.deserialize_example(raw, decoders=decoders)
    ),
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=True,
  )
  numbers = tf.data.Dataset.from_tensor_slices(kept)
  return tf.data.Dataset.zip(numbers, examples)


class TfdsSource:
  """A benchmark read from prepared tfds files, offline.

  Records are numbered ``0..N-1`` per split in the order tfds reads them with
  ``shuffle_files=False`` (deterministic); :meth:`labels`, :meth:`arrays` and
  :meth:`dataset` all use that numbering.

  Args:
    name: one of :data:`SPECS`.
    data_dir: tfds data folder (default ``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets``).
    dev_source: ImageNet-LT's dev set, see :func:`get_spec`.
    places_lt_dir: Places-LT only: folder with ``Places_LT_*.txt``.
    download: download and prepare the dataset when it is not prepared (the
      only use of the network; off by default, and not possible for the
      datasets that need a manual download).
    dev_per_class: dev images per class carved from train (default: the
      spec's); ignored where a split is the dev set.
    cache_dir: where read columns (labels, file names) are cached; None:
      :func:`ltjax.data.tfds_cache.default_cache_dir`; '' : no cache.

  Raises:
    ltjax.errors.ConfigError: unknown name.
    ltjax.errors.MissingFileError: the dataset is not prepared in
      ``data_dir``, or a Places-LT list file is missing; the message says
      how to prepare it.
  """

  def __init__(
    self,
    name,
    data_dir=None,
    *,
    dev_source='validation',
    places_lt_dir=None,
    download=False,
    dev_per_class=None,
    cache_dir=None,
  ):
    self.spec = get_spec(name, dev_source)
    if dev_per_class and self.spec.dev_split is None:
      self.spec = dataclasses.replace(self.spec, dev_per_class=dev_per_class)
    self._lists = None
    if self.spec.name == 'places_lt':
      self._lists = places_lt.check_lists(places_lt_dir)
    disable_gcs()
    data_dir = os.fspath(data_dir) if data_dir is not None else None
    self.builder = tfds.builder(
      self.spec.tfds_name, data_dir=data_dir, try_gcs=False
    )
    if not self.builder.is_prepared() and download:
      # The one place that may use the network, and only when asked to.
      self.builder.download_and_prepare()
    if not self.builder.is_prepared():
      raise MissingFileError(
        f'{name}: tfds dataset {self.spec.tfds_name} is not prepared in '
        f'{self.builder.data_dir} (nothing is downloaded here). '
        + self.spec.prepare.format(
          tfds=self.spec.tfds_name,
          data_dir=self.builder.data_dir_root,
        )
      )
    if cache_dir is None:
      cache_dir = tfds_cache.default_cache_dir()
    self._cache_dir = cache_dir
    self._labels = {}
    self._records = {}
    self._names = {}

  @property
  def num_classes(self) -> int:
    return self.spec.num_classes

  def __repr__(self):
    return f'TfdsSource({self.spec.name!r}, {self.builder.data_dir!r})'

  def _check_split(self, split):
    if split not in self.spec.splits:
      raise ValueError(
        f'{self.spec.name} has splits {self.spec.splits}, not {split!r}.'
      )

  def _tfds_split(self, split):
    if self._lists is None:
      return split
    return 'validation' if split == 'test' else 'train'

  def _read(self, tfds_split):
    return self.builder.as_dataset(
      split=tfds_split,
      shuffle_files=False,
      decoders={'image': tfds.decode.SkipDecoding()},
      read_config=_read_config(),
    )

  def _column(self, tfds_split, key):
    """Feature ``key`` of every record of ``tfds_split``, through the cache.

    Reading it reads every record's bytes (images included), so it is
    cached under the split's
    :func:`ltjax.data.tfds_cache.split_fingerprint`.
    """
    path = self._cache_path(tfds_split, key)
    cached = tfds_cache.load(path)  # None: missing or damaged
    if cached is not None:
      return cached
    ds = self._read(tfds_split).map(lambda ex: ex[key], tf.data.AUTOTUNE)
    parts = list(ds.batch(8192).as_numpy_iterator())
    column = np.concatenate(parts) if parts else np.zeros(0)
    if column.dtype == object:  # strings: fixed-width bytes, no pickle
      column = column.astype(np.bytes_)
    if path:
      tfds_cache.save(path, column)
    return column

  def _cache_path(self, tfds_split, key, extra=''):
    if not self._cache_dir:
      return None
    fingerprint = tfds_cache.split_fingerprint(self.builder, tfds_split)
    if fingerprint is None:
      return None
    name = f'{self.builder.name}-{tfds_split}-{key}-{fingerprint[:20]}{extra}'
    return os.path.join(self._cache_dir, name + '.npy')

  def _stream(self, tfds_split, keys=None):
    """``(record number, example)`` pairs of ``tfds_split``, in order: every
    record, or at least the records ``keys`` (sorted record numbers).

    A selection of at most :data:`COPY_FRACTION` of what would be read is
    read from a copy: its first use writes the selected records, as they
    are stored, to a TFRecord file in the cache (keyed by the split's files
    and the selection), and every later epoch reads only the copy. Places-LT
    is always such a selection (its lists name 62,500 + 7,300 of Places365
    ``train``'s 1.8 million images); a dev set carved from train is one too
    (iNaturalist 2018's 16,284 of 437,513 images), read again at every pass
    of the meta stage's dev stream and at every dev evaluation.
    """

    def whole():
      return self._read(tfds_split).enumerate()

    read, size = whole, None  # what is read, and its size (None: all)
    if self._lists is not None:
      kept = self._places_kept(tfds_split)
      digest = places_lt.lists_digest(self._lists)
      listed = self._copy(tfds_split, read, size, kept, 'places_lt', digest)
      if listed is not None:
        read, size = (lambda: listed), len(kept)
    if keys is not None:
      digest = hashlib.sha256(np.asarray(keys, np.int64).tobytes())
      digest = '-' + digest.hexdigest()[:16]
      selected = self._copy(tfds_split, read, size, keys, 'records', digest)
      if selected is not None:
        return selected
    return read()

  def _copy(self, tfds_split, read, size, kept, key, digest):
    """The records ``kept`` of the stream ``read()`` (``size`` records;
    None: the whole split) from their copy in the cache, written on first
    use; None without a cache or when they are more than
    :data:`COPY_FRACTION` of the stream."""
    path = self._cache_path(tfds_split, key, digest)
    if path is None:
      return None
    if size is None:
      size = self.builder.info.splits[tfds_split].num_examples
    if len(kept) > COPY_FRACTION * size:
      return None
    path = path[: -len('.npy')] + '.tfrecord'
    features = self.builder.info.features
    if not os.path.isfile(path):
      logging.info(
        'Copying %d of the %d records of %s/%s to %s (once; later reads '
        'use the copy)...',
        len(kept),
        size,
        self.spec.tfds_name,
        tfds_split,
        path,
      )
      write_copy(read(), kept, path, features)
    return read_copy(path, kept, features)

  def _places_kept(self, tfds_split):
    """Record numbers of ``tfds_split`` that Places-LT's lists name."""
    return np.unique(
      np.concatenate(
        [
          self._split_records(split)[0]
          for split in self.spec.splits
          if self._tfds_split(split) == tfds_split
        ]
      )
    )

  def _places_records(self, split):
    """Record numbers and labels of a Places-LT split, by file name."""
    tfds_split = self._tfds_split(split)
    if tfds_split not in self._names:  # train and val share a tfds split
      self._names[tfds_split] = [
        n.decode().lstrip('/') for n in self._column(tfds_split, 'filename')
      ]
    return places_lt.match_list(
      self._lists[split], self._names[tfds_split], tfds_split
    )

  def _split_records(self, split):
    """``(records, labels)``: records None for a whole tfds split."""
    self._check_split(split)
    if split not in self._labels:
      if self._lists is not None:
        self._records[split], self._labels[split] = self._places_records(split)
      else:
        labels = self._column(split, 'label').astype(np.int32)
        self._records[split], self._labels[split] = None, labels
    return self._records[split], self._labels[split]

  def labels(self, split: str) -> np.ndarray:
    """``[N]`` int32 labels of ``split`` in record order.

    Read from the cache when the split's files are unchanged; else every
    record of the split is read once (images are not decoded, but their
    bytes are read) and the labels cached.
    """
    return self._split_records(split)[1]

  def dataset(self, split: str, indices=None, *, decode: bool = True):
    """Examples of ``split``, optionally only the records ``indices``.

    Yields each selected record once, in record order (duplicates in
    ``indices`` are dropped). A small selection (a dev set, Places-LT's
    lists) is read from its one-time copy in the cache (:meth:`_stream`);
    a larger one, or any without a cache, reads every record of the split
    and drops the others before decoding.

    Args:
      split: one of ``spec.splits``.
      indices: record numbers ``[K]`` in ``[0, N)``, or None for all.
      decode: decode the images; False keeps the encoded bytes (for the
        crop-before-decode path of :mod:`ltjax.data.tf_pipeline`).

    Returns:
      A ``tf.data.Dataset`` of ``{'image': uint8 [H, W, 3] (or a string),
      'label': int32, 'index': int64}`` with known cardinality.
    """
    self._check_split(split)
    tfds_split = self._tfds_split(split)
    if self._lists is None and indices is None:

      def pick(i, ex):
        label = tf.cast(ex['label'], tf.int32)
        return {'image': ex['image'], 'label': label, 'index': i}

      ds = self._stream(tfds_split).map(pick)
    else:
      records, labels = self._split_records(split)
      n = len(labels)
      sel = np.arange(n) if indices is None else np.unique(indices)
      sel = sel.astype(np.int64)
      if sel.size and (sel[0] < 0 or sel[-1] >= n):
        raise ValueError(
          f'indices must lie in [0, {n}) for {self.spec.name}/{split}, got '
          f'{sel[0]}..{sel[-1]}.'
        )
      keys = sel if records is None else records[sel]
      ds = self._stream(tfds_split, keys)
      table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(keys, sel), default_value=-1
      )
      label_of = tf.constant(labels, tf.int32)

      def pick(i, ex):
        index = table.lookup(i)
        label = tf.gather(label_of, tf.maximum(index, 0))
        return {'image': ex['image'], 'label': label, 'index': index}

      ds = ds.map(pick).filter(lambda ex: ex['index'] >= 0)
      ds = ds.apply(tf.data.experimental.assert_cardinality(len(sel)))
    if decode:

      def decode_image(ex):
        image = tf.io.decode_image(ex['image'], 3, expand_animations=False)
        return {**ex, 'image': image}

      ds = ds.map(decode_image, num_parallel_calls=tf.data.AUTOTUNE)
    return ds

  def arrays(self, split: str, indices=None) -> ArrayData:
    """The (selected) records of ``split`` decoded into host memory.

    For CIFAR-size data: all images must have one shape.

    Returns:
      An :class:`ArrayData` with uint8 ``[N, H, W, 3]`` and int32 ``[N]``.
    """
    ds = self.dataset(split, indices)
    images, labels = [], []
    for ex in ds.map(lambda ex: (ex['image'], ex['label'])).as_numpy_iterator():
      images.append(ex[0])
      labels.append(ex[1])
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
      raise ValueError(
        f'{self.spec.name}/{split} has images of {len(shapes)} shapes (e.g. '
        f'{sorted(shapes)[:3]}); stream it with dataset() instead.'
      )
    return from_arrays(
      np.stack(images),
      np.asarray(labels),
      num_classes=self.num_classes,
      name=f'{self.spec.name}/{split}',
    )

  def dev_split(self, seed: int = 0) -> DevSplit:
    """Train and dev indices by the spec's dev rule (:func:`carve_dev`)."""
    num_dev = None
    if self.spec.dev_split is not None:
      num_dev = len(self.labels(self.spec.dev_split))
    train_labels = self.labels(self.spec.train_split)
    return carve_dev(self.spec, train_labels, seed, num_dev)
