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
Places365 ``train`` by name, ``test`` those of Places365 ``validation``.

A split's labels (and Places365's file names) are read from every record's
bytes once and then cached as ``.npy`` files in ``cache_dir`` (default
:func:`default_cache_dir`), keyed by a fingerprint of the split's files
(names, sizes, modification times), so a changed dataset is read again and
the next start of a run does not read the images.

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
import tempfile

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import gcs_utils

from ltjax.data.arrays import ArrayData, balanced_holdout, from_arrays
from ltjax.data.specs import DEV_SOURCES as DEV_SOURCES
from ltjax.data.specs import SPECS as SPECS
from ltjax.data.specs import DatasetSpec as DatasetSpec
from ltjax.data.specs import get_spec as get_spec
from ltjax.data.tf_pipeline import hide_gpus_from_tf

hide_gpus_from_tf()

PLACES_LT_LISTS = {
  'train': 'Places_LT_train.txt',
  'val': 'Places_LT_val.txt',
  'test': 'Places_LT_test.txt',
}
_PLACES_LT_HELP = (
  'The Places-LT split lists Places_LT_train.txt, Places_LT_val.txt and '
  'Places_LT_test.txt (lines "data_256/a/airfield/00000001.jpg 0") come with '
  'the OLTR release of Liu et al., CVPR 2019 '
  '(github.com/zhmiao/OpenLongTailRecognition-OLTR, folder Places_LT_v2 of '
  'its data download); pass the folder that holds them as places_lt_dir.'
)


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


def disable_gcs() -> None:
  """Switches off tfds's look-ups on ``gs://tfds-data``.

  ``tfds.builder`` of a dataset without local metadata asks GCS for its
  ``dataset_info`` (``DatasetInfo.initialize_from_bucket``), and
  ``download_and_prepare`` may copy a prepared dataset from there. Both are
  gated by ``gcs_utils._is_gcs_disabled`` (True by default in tfds 4.9.10,
  but other code, e.g. ``tfds.testing``, may flip it); this pins it.
  """
  gcs_utils._is_gcs_disabled = True


def default_cache_dir() -> str:
  """``$LTJAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/ltjax``, else
  ``~/.cache/ltjax``."""
  if os.environ.get('LTJAX_CACHE_DIR'):
    return os.environ['LTJAX_CACHE_DIR']
  base = os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache')
  return os.path.join(base, 'ltjax')


def split_fingerprint(builder, tfds_split: str) -> str | None:
  """sha256 of a prepared split's identity: the dataset's name and version
  and each file's name, size and modification time. None when the split has
  no files to fingerprint (``tfds.testing.mock_data``), so nothing is
  cached for it."""
  try:
    paths = builder.info.splits[tfds_split].filepaths
  except (KeyError, ValueError):
    return None
  digest = hashlib.sha256(f'{builder.name} {builder.version}'.encode())
  digest.update(f' {tfds_split}\n'.encode())
  try:
    for path in paths:
      stat = os.stat(os.fspath(path))
      name = os.path.basename(os.fspath(path))
      digest.update(f'{name} {stat.st_size} {stat.st_mtime_ns}\n'.encode())
  except OSError:
    return None
  return digest.hexdigest() if paths else None


def _shareable(path: str) -> None:
  """The permissions of a plain new file (``mkstemp`` makes them 0600), so
  the other users of a shared cache can read it."""
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(path, 0o666 & ~umask)


def _save_atomic(path: str, array: np.ndarray) -> None:
  """``np.save`` through a temporary file and a rename: a crash leaves no
  half-written cache behind, and concurrent writers of one file agree."""
  folder = os.path.dirname(path)
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, suffix='.npy.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      np.save(f, array, allow_pickle=False)
    _shareable(tmp)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _read_config():
  options = tf.data.Options()
  options.deterministic = True
  return tfds.ReadConfig(options=options, shuffle_seed=0)


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
      :func:`default_cache_dir`; '' : no cache.

  Raises:
    ValueError: unknown name.
    FileNotFoundError: the dataset is not prepared in ``data_dir``, or a
      Places-LT list file is missing; the message says how to prepare it.
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
      self._lists = self._check_lists(places_lt_dir)
    disable_gcs()
    data_dir = os.fspath(data_dir) if data_dir is not None else None
    self.builder = tfds.builder(
      self.spec.tfds_name, data_dir=data_dir, try_gcs=False
    )
    if not self.builder.is_prepared() and download:
      # The one place that may use the network, and only when asked to.
      self.builder.download_and_prepare()
    if not self.builder.is_prepared():
      raise FileNotFoundError(
        f'{name}: tfds dataset {self.spec.tfds_name} is not prepared in '
        f'{self.builder.data_dir} (nothing is downloaded here). '
        + self.spec.prepare.format(
          tfds=self.spec.tfds_name,
          data_dir=self.builder.data_dir_root,
        )
      )
    self._cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    self._labels = {}
    self._records = {}
    self._names = {}

  @property
  def num_classes(self) -> int:
    return self.spec.num_classes

  def __repr__(self):
    return f'TfdsSource({self.spec.name!r}, {self.builder.data_dir!r})'

  @staticmethod
  def _check_lists(places_lt_dir):
    if places_lt_dir is None:
      raise ValueError(f'places_lt needs places_lt_dir. {_PLACES_LT_HELP}')
    paths = {
      split: os.path.join(os.fspath(places_lt_dir), fname)
      for split, fname in PLACES_LT_LISTS.items()
    }
    missing = [p for p in paths.values() if not os.path.isfile(p)]
    if missing:
      raise FileNotFoundError(f'missing {missing}. {_PLACES_LT_HELP}')
    return paths

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
    cached under the split's :func:`split_fingerprint`.
    """
    path = self._cache_path(tfds_split, key)
    if path and os.path.isfile(path):
      try:
        return np.load(path, allow_pickle=False)
      except (OSError, ValueError):  # damaged: read the records again
        pass
    ds = self._read(tfds_split).map(lambda ex: ex[key], tf.data.AUTOTUNE)
    parts = list(ds.batch(8192).as_numpy_iterator())
    column = np.concatenate(parts) if parts else np.zeros(0)
    if column.dtype == object:  # strings: fixed-width bytes, no pickle
      column = column.astype(np.bytes_)
    if path:
      _save_atomic(path, column)
    return column

  def _cache_path(self, tfds_split, key, extra=''):
    if not self._cache_dir:
      return None
    fingerprint = split_fingerprint(self.builder, tfds_split)
    if fingerprint is None:
      return None
    name = f'{self.builder.name}-{tfds_split}-{key}-{fingerprint[:20]}{extra}'
    return os.path.join(self._cache_dir, name + '.npy')

  def _stream(self, tfds_split):
    """``(record number, example)`` pairs of ``tfds_split``, in order.

    For Places-LT, only the records its lists name: Places365 ``train``
    holds 1.8 million images for Places-LT's 62,500 + 7,300, so the first
    use writes those records, as they are stored, to a TFRecord copy in the
    cache (keyed by the split's files and the lists), and every later
    epoch reads the copy.
    """
    copy = self._places_copy(tfds_split) if self._lists is not None else None
    if copy is None:
      return self._read(tfds_split).enumerate()
    path, kept = copy
    decoders = {'image': tfds.decode.SkipDecoding()}
    features = self.builder.info.features
    examples = tf.data.TFRecordDataset(path).map(
      tf.autograph.experimental.do_not_convert(
        lambda raw: features.deserialize_example(raw, decoders=decoders)
      ),
      num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True,
    )
    numbers = tf.data.Dataset.from_tensor_slices(kept)
    return tf.data.Dataset.zip(numbers, examples)

  def _places_copy(self, tfds_split):
    """``(path, record numbers)`` of the filtered copy of ``tfds_split``,
    written if missing; None without a cache or when every record is used."""
    kept = np.unique(
      np.concatenate(
        [
          self._split_records(split)[0]
          for split in self.spec.splits
          if self._tfds_split(split) == tfds_split
        ]
      )
    )
    path = self._cache_path(tfds_split, 'places_lt', self._lists_digest())
    if path is None or len(kept) == len(self._names[tfds_split]):
      return None
    path = path[: -len('.npy')] + '.tfrecord'
    if not os.path.isfile(path):
      self._write_copy(tfds_split, kept, path)
    return path, kept

  def _write_copy(self, tfds_split, kept, path):
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

    ds = self._read(tfds_split).enumerate().filter(listed).map(example)
    features = self.builder.info.features
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix='.tmp')
    os.close(fd)
    try:
      with tf.io.TFRecordWriter(tmp) as writer:
        for ex in ds.as_numpy_iterator():
          ex = {**ex, 'image': io.BytesIO(ex['image'])}  # stored bytes
          writer.write(features.serialize_example(ex))
      _shareable(tmp)
      os.replace(tmp, path)
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)

  def _lists_digest(self):
    digest = hashlib.sha256()
    for split in sorted(self._lists):
      with open(self._lists[split], 'rb') as f:
        digest.update(f.read())
    return digest.hexdigest()[:12]

  def _places_records(self, split):
    """Record numbers and labels of a Places-LT split, by file name."""
    tfds_split = self._tfds_split(split)
    if tfds_split not in self._names:  # train and val share a tfds split
      self._names[tfds_split] = [
        n.decode().lstrip('/') for n in self._column(tfds_split, 'filename')
      ]
    names = self._names[tfds_split]
    where = {n: i for i, n in enumerate(names)}
    paths, labels = [], []
    with open(self._lists[split]) as f:
      for line in f:
        if line.strip():
          path, label = line.split()
          paths.append(path.lstrip('/'))
          labels.append(int(label))
    missing = [p for p in paths if p not in where]
    if missing:
      raise ValueError(
        f'{len(missing)} of {len(paths)} images of {self._lists[split]} are '
        f'not in tfds places365_small/{self._tfds_split(split)} (first: '
        f'{missing[:3]}; tfds names look like {names[:2]}).'
      )
    records = np.array([where[p] for p in paths], np.int64)
    if len(np.unique(records)) != len(records):
      raise ValueError(f'{self._lists[split]} lists an image twice.')
    order = np.argsort(records)
    return records[order], np.asarray(labels, np.int32)[order]

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
    ``indices`` are dropped). Restricting still reads every record of the
    stream and drops the others before decoding; for Places-LT the stream
    is its one-time filtered copy (:meth:`_stream`), not all of Places365.

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
    ds = self._stream(self._tfds_split(split))
    if self._lists is None and indices is None:

      def pick(i, ex):
        label = tf.cast(ex['label'], tf.int32)
        return {'image': ex['image'], 'label': label, 'index': i}

      ds = ds.map(pick)
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
