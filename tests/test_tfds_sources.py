"""Tests of ltjax.data.tfds_sources: offline tfds sources of the benchmarks.

Two kinds of fake data, both offline: small *prepared* tfds datasets written
to tmp_path with the datasets' own feature specs (real TFRecord files and
metadata, read by tfds's real reader) and ``tfds.testing.mock_data``.
"""

import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

tf = pytest.importorskip('tensorflow')
tfds = pytest.importorskip('tensorflow_datasets')

from benchmarks import data_pipeline  # noqa: E402
from ltjax.data import tf_pipeline  # noqa: E402
from ltjax.data import tfds_sources as ts  # noqa: E402


def write_prepared(data_dir, name, splits, num_shards=2):
  """Writes ``splits`` ({split: [example dict]}) as prepared tfds data."""
  data_pipeline.write_prepared(
    data_dir,
    name,
    {split: (len(ex), ex.__getitem__) for split, ex in splits.items()},
    num_shards,
  )


def cifar_examples(n, seed, num_classes=10):
  rng = np.random.default_rng(seed)
  return [
    {
      'id': f'x{i}',
      'image': rng.integers(0, 256, (32, 32, 3), np.uint8),
      'label': i % num_classes,
    }
    for i in range(n)
  ]


@pytest.fixture(scope='module')
def cifar_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('tfds')
  write_prepared(
    data_dir,
    'cifar10',
    {'train': cifar_examples(130, 0), 'test': cifar_examples(20, 1)},
    num_shards=3,
  )
  return data_dir


@pytest.fixture(scope='module')
def cifar(cifar_dir):
  return ts.TfdsSource('cifar10', cifar_dir)


def test_import_ltjax_does_not_import_tensorflow():
  code = (
    'import sys, ltjax, ltjax.data; '
    'assert "tensorflow" not in sys.modules, "tensorflow imported"; '
    'assert "tensorflow_datasets" not in sys.modules'
  )
  subprocess.run([sys.executable, '-c', code], check=True, timeout=120)


def test_unknown_name_lists_known_names():
  with pytest.raises(ValueError, match='imagenet_lt') as e:
    ts.TfdsSource('imagenet')
  for name in ts.SPECS:
    assert name in str(e.value)


def test_dev_rules_follow_the_paper():
  per_class = {n: s.dev_per_class for n, s in ts.SPECS.items()}
  assert per_class == {
    'cifar10': 10,
    'cifar100': 10,
    'i_naturalist2017': 5,
    'i_naturalist2018': 2,
    'imagenet_lt': 20,
    'places_lt': 10,
  }
  assert ts.get_spec('i_naturalist2018').test_split == 'validation'
  assert ts.get_spec('imagenet_lt').dev_split == 'validation'
  assert ts.get_spec('imagenet_lt', dev_source='carve').dev_split is None
  with pytest.raises(ValueError, match='dev_source'):
    ts.get_spec('imagenet_lt', dev_source='val')


@pytest.mark.parametrize('name', [n for n in ts.SPECS if n != 'imagenet_lt'])
def test_carve_dev_is_balanced_and_disjoint(name):
  spec = ts.get_spec(name)
  rng = np.random.default_rng(0)
  counts = spec.dev_per_class + rng.integers(0, 4, spec.num_classes)
  labels = rng.permutation(np.repeat(np.arange(spec.num_classes), counts))
  split = ts.carve_dev(spec, labels, seed=3)
  assert split.dev_from == spec.train_split
  dev_counts = np.bincount(labels[split.dev], minlength=spec.num_classes)
  np.testing.assert_array_equal(dev_counts, spec.dev_per_class)
  assert np.intersect1d(split.dev, split.train).size == 0
  assert len(split.dev) + len(split.train) == len(labels)
  again = ts.carve_dev(spec, labels, seed=3)
  np.testing.assert_array_equal(again.dev, split.dev)
  other = ts.carve_dev(spec, labels, seed=4)
  assert not np.array_equal(other.dev, split.dev)


def test_download_only_when_asked(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(
    tfds.core.DatasetBuilder,
    'download_and_prepare',
    lambda self, **kw: calls.append(self.name),
  )
  with pytest.raises(FileNotFoundError, match='not prepared'):
    ts.TfdsSource('cifar10', tmp_path)
  assert calls == []
  # Asked to download: tfds is called (here a stub that prepares nothing).
  with pytest.raises(FileNotFoundError, match='not prepared'):
    ts.TfdsSource('cifar10', tmp_path, download=True)
  assert calls == ['cifar10']


def test_unprepared_dataset_says_how_to_prepare(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    ts.TfdsSource('cifar100', tmp_path)
  msg = str(e.value)
  assert 'not prepared' in msg and str(tmp_path) in msg
  assert 'tfds build cifar100' in msg and 'download_and_prepare' in msg
  with pytest.raises(FileNotFoundError, match='ILSVRC2012_img_train.tar'):
    ts.TfdsSource('imagenet_lt', tmp_path)
  with pytest.raises(FileNotFoundError, match='manual_dir'):
    ts.TfdsSource('imagenet_lt', tmp_path)


@pytest.fixture
def no_network(monkeypatch):
  """Any socket use or tfds GCS look-up raises."""
  from tensorflow_datasets.core.utils import gcs_utils

  def refuse(*args, **kwargs):
    raise AssertionError(f'network access attempted: {args[:2]}')

  monkeypatch.setattr(socket.socket, 'connect', refuse)
  monkeypatch.setattr(socket, 'getaddrinfo', refuse)
  monkeypatch.setattr(socket, 'create_connection', refuse)
  monkeypatch.setattr(gcs_utils, 'exists', refuse)
  monkeypatch.setattr(gcs_utils, 'download_gcs_dataset', refuse)
  # As if other code had switched tfds's GCS access on.
  monkeypatch.setattr(gcs_utils, '_is_gcs_disabled', False)


def test_no_network_access(no_network, tmp_path, cifar_dir):
  # Control: plain tfds, with GCS switched on, does look GCS up.
  with pytest.raises(AssertionError, match='network access attempted'):
    tfds.builder('cifar100', data_dir=os.fspath(tmp_path))
  with pytest.raises(FileNotFoundError, match='not prepared'):
    ts.TfdsSource('cifar100', tmp_path)
  source = ts.TfdsSource('cifar10', cifar_dir)
  assert len(source.labels('test')) == 20
  assert len(list(source.dataset('test', [0, 1]))) == 2


def test_labels_arrays_dataset_agree(cifar):
  labels = cifar.labels('train')
  assert labels.dtype == np.int32 and labels.shape == (130,)
  np.testing.assert_array_equal(np.bincount(labels), [13] * 10)
  data = cifar.arrays('train')
  assert data.image.shape == (130, 32, 32, 3) and data.image.dtype == np.uint8
  np.testing.assert_array_equal(data.label, labels)
  # The written images, in some deterministic order.
  written = {ex['image'].tobytes() for ex in cifar_examples(130, 0)}
  assert {im.tobytes() for im in data.image} == written
  ex = next(iter(cifar.dataset('train')))
  assert ex['image'].dtype == tf.uint8 and ex['image'].shape == (32, 32, 3)
  assert ex['label'].dtype == tf.int32 and ex['index'].dtype == tf.int64


def test_dataset_restricted_to_indices(cifar):
  data = cifar.arrays('train')
  wanted = [77, 3, 129, 3, 40]
  ds = cifar.dataset('train', wanted)
  assert int(ds.cardinality()) == 4
  got = list(ds.as_numpy_iterator())
  idx = [int(ex['index']) for ex in got]
  assert idx == [3, 40, 77, 129]
  for ex in got:
    np.testing.assert_array_equal(ex['image'], data.image[ex['index']])
    assert ex['label'] == data.label[ex['index']]
  sub = cifar.arrays('train', wanted)
  np.testing.assert_array_equal(sub.image, data.image[[3, 40, 77, 129]])
  encoded = next(iter(cifar.dataset('train', [40], decode=False)))
  assert encoded['image'].dtype == tf.string
  np.testing.assert_array_equal(
    tf.io.decode_png(encoded['image']).numpy(), data.image[40]
  )
  with pytest.raises(ValueError, match=r'\[0, 130\)'):
    cifar.dataset('train', [130])
  with pytest.raises(ValueError, match='splits'):
    cifar.labels('validation')


def count_records(path):
  return sum(1 for _ in tf.data.TFRecordDataset(str(path)))


def no_reading(*args, **kwargs):
  raise AssertionError('read the records of the split')


def test_a_small_selection_is_read_from_its_copy(cifar_dir, tmp_path):
  dev = [129, 3, 17, 40, 41, 99]
  uncached = ts.TfdsSource('cifar10', cifar_dir, cache_dir='')
  want = list(uncached.dataset('train', dev, decode=False).as_numpy_iterator())
  first = ts.TfdsSource('cifar10', cifar_dir, cache_dir=tmp_path)
  first.dataset('train', dev)
  (copy,) = tmp_path.glob('*.tfrecord')
  assert copy.name.startswith('cifar10-train-records-')
  assert count_records(copy) == len(dev)
  second = ts.TfdsSource('cifar10', cifar_dir, cache_dir=tmp_path)
  second._read = no_reading  # labels from the cache, records from the copy
  for _ in range(2):  # every pass reads the copy
    got = list(second.dataset('train', dev, decode=False).as_numpy_iterator())
    assert [int(ex['index']) for ex in got] == sorted(dev)
    for a, b in zip(got, want, strict=True):
      assert a['image'] == b['image']  # the stored bytes
      assert a['label'] == b['label'] and a['index'] == b['index']
  # More than half of the 130 records is filtered from the split; half is
  # copied.
  with pytest.raises(AssertionError, match='read the records'):
    second.dataset('train', range(66))
  first.dataset('train', range(66))
  first.dataset('train', range(65))
  assert sorted(count_records(p) for p in tmp_path.glob('*.tfrecord')) == [
    len(dev),
    65,
  ]


def test_labels_are_cached_until_the_files_change(tmp_path):
  data_dir, cache = tmp_path / 'tfds', tmp_path / 'cache'
  write_prepared(data_dir, 'cifar10', {'train': cifar_examples(30, 0)})
  want = ts.TfdsSource('cifar10', data_dir, cache_dir='').labels('train')
  assert not cache.exists()  # '' : no cache
  first = ts.TfdsSource('cifar10', data_dir, cache_dir=cache)
  np.testing.assert_array_equal(first.labels('train'), want)
  (cached,) = cache.iterdir()
  assert cached.name.startswith('cifar10-train-label-')
  assert cached.stat().st_mode & 0o044  # readable by a shared cache's users

  second = ts.TfdsSource('cifar10', data_dir, cache_dir=cache)
  second._read = no_reading  # the second start reads no record
  np.testing.assert_array_equal(second.labels('train'), want)

  # Rewritten data (new labels, same file names): read again, not the cache.
  shutil.rmtree(data_dir)
  changed = [{**ex, 'label': 9 - ex['label']} for ex in cifar_examples(30, 0)]
  write_prepared(data_dir, 'cifar10', {'train': changed})
  third = ts.TfdsSource('cifar10', data_dir, cache_dir=cache)
  np.testing.assert_array_equal(third.labels('train'), 9 - want)
  assert len(list(cache.iterdir())) == 2

  # A damaged cache file is read around and rewritten.
  for path in cache.iterdir():
    path.write_bytes(b'not an npy file')
  fourth = ts.TfdsSource('cifar10', data_dir, cache_dir=cache)
  np.testing.assert_array_equal(fourth.labels('train'), 9 - want)
  fifth = ts.TfdsSource('cifar10', data_dir, cache_dir=cache)
  fifth._read = no_reading
  np.testing.assert_array_equal(fifth.labels('train'), 9 - want)


def test_dev_split_of_source(cifar):
  split = cifar.dev_split(seed=1)
  labels = cifar.labels('train')
  np.testing.assert_array_equal(np.bincount(labels[split.dev]), [10] * 10)
  assert np.intersect1d(split.dev, split.train).size == 0
  assert len(split.dev) + len(split.train) == 130 and split.dev_from == 'train'


def test_imagenet_lt_dev_source(tmp_path):
  def examples(n, seed):
    rng = np.random.default_rng(seed)
    return [
      {
        'file_name': f'n{i}.JPEG',
        'image': rng.integers(0, 256, (8 + i, 12, 3), np.uint8),
        'label': (7 * i) % 1000,
      }
      for i in range(n)
    ]

  write_prepared(
    tmp_path,
    'imagenet_lt',
    {
      'train': examples(9, 0),
      'validation': examples(4, 1),
      'test': examples(5, 2),
    },
  )
  source = ts.TfdsSource('imagenet_lt', tmp_path)
  split = source.dev_split()
  assert split.dev_from == 'validation'
  np.testing.assert_array_equal(split.dev, np.arange(4))
  np.testing.assert_array_equal(split.train, np.arange(9))
  carve = ts.TfdsSource('imagenet_lt', tmp_path, dev_source='carve')
  with pytest.raises(ValueError, match='holdout of 20 per class'):
    carve.dev_split()
  with pytest.raises(ValueError, match='shapes'):
    source.arrays('train')  # images of different sizes


@pytest.mark.parametrize(
  'name',
  [
    'cifar10',
    'cifar100',
    'i_naturalist2017',
    'i_naturalist2018',
    'imagenet_lt',
  ],
)
def test_every_tfds_source_under_mock_data(name, monkeypatch):
  # mock_data serves examples but no files: declare the dataset prepared.
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'is_prepared', lambda _: True)
  with tfds.testing.mock_data(num_examples=7):
    source = ts.TfdsSource(name)
    labels = source.labels(source.spec.test_split)
    assert labels.shape == (7,) and labels.dtype == np.int32
    assert labels.min() >= 0 and labels.max() < source.num_classes
    got = list(source.dataset(source.spec.test_split, [5, 1]))
    assert [int(ex['index']) for ex in got] == [1, 5]
    assert [int(ex['label']) for ex in got] == list(labels[[1, 5]])
    for ex in got:
      assert ex['image'].dtype == tf.uint8
      assert ex['image'].shape.rank == 3 and ex['image'].shape[-1] == 3


def jpeg(rng, shape, channels=3):
  image = rng.integers(0, 256, (*shape, channels), np.uint8)
  return tf.io.encode_jpeg(image).numpy()


@pytest.fixture
def places(tmp_path):
  """places365_small with 12 train and 6 validation JPEGs; Places-LT lists."""
  rng = np.random.default_rng(0)
  train = [
    {
      'image': jpeg(rng, (20, 24), channels=1 if i == 4 else 3),
      'label': i % 5,
      'filename': f'data_256/a/c{i % 5}/{i:08d}.jpg',
    }
    for i in range(12)
  ]
  val = [
    {
      'image': jpeg(rng, (24, 20)),
      'label': i % 3,
      'filename': f'val_256/Places365_val_{i:08d}.jpg',
    }
    for i in range(6)
  ]
  write_prepared(
    tmp_path / 'tfds', 'places365_small', {'train': train, 'validation': val}
  )
  lists = tmp_path / 'Places_LT_v2'
  lists.mkdir()
  chosen = {'train': [9, 4, 0, 7], 'val': [2, 3]}
  for split, picks in chosen.items():
    lines = [f'{train[i]["filename"]} {100 + i}' for i in picks]
    (lists / ts.PLACES_LT_LISTS[split]).write_text('\n'.join(lines) + '\n')
  lines = [f'{val[i]["filename"]} {200 + i}' for i in (5, 1)]
  (lists / ts.PLACES_LT_LISTS['test']).write_text('\n'.join(lines) + '\n')
  return tmp_path, train, val


def test_places_lt_selects_listed_images(places):
  root, train, val = places
  source = ts.TfdsSource(
    'places_lt', root / 'tfds', places_lt_dir=root / 'Places_LT_v2'
  )
  assert source.num_classes == 365
  for split, images, picks, offset in [
    ('train', train, [9, 4, 0, 7], 100),
    ('test', val, [5, 1], 200),
  ]:
    got = list(source.dataset(split).as_numpy_iterator())
    assert len(got) == len(picks)
    # The list files' labels, in record order, for exactly the listed files.
    labels = source.labels(split)
    np.testing.assert_array_equal([ex['label'] for ex in got], labels)
    assert sorted(labels - offset) == sorted(picks)
    for ex in got:
      i = int(ex['label']) - offset
      want = tf.io.decode_jpeg(images[i]['image'], channels=3).numpy()
      np.testing.assert_array_equal(ex['image'], want)
      assert ex['image'].shape[-1] == 3  # grayscale image 4 too
  second = list(source.dataset('train', [1]).as_numpy_iterator())
  assert len(second) == 1 and second[0]['label'] == source.labels('train')[1]


def test_places_lt_reads_a_filtered_copy(places, tmp_path):
  root, _, _ = places
  kwargs = dict(places_lt_dir=root / 'Places_LT_v2', cache_dir=tmp_path / 'c')
  want = {
    split: list(
      ts.TfdsSource('places_lt', root / 'tfds', places_lt_dir=kwargs[
        'places_lt_dir'], cache_dir='').dataset(split).as_numpy_iterator()
    )
    for split in ('train', 'val', 'test')
  }  # fmt: skip
  first = ts.TfdsSource('places_lt', root / 'tfds', **kwargs)
  for split in want:
    first.dataset(split)
  # train + val: 6 of the 12 train records; test: 2 of the 6 validation
  # ones; and val's 2 of those 6 train records have a copy of their own.
  counts = {
    tuple(path.name.split('-')[1:3]): count_records(path)
    for path in (tmp_path / 'c').glob('*.tfrecord')
  }
  assert counts == {
    ('train', 'places_lt'): 6,
    ('validation', 'places_lt'): 2,
    ('train', 'records'): 2,
  }
  second = ts.TfdsSource('places_lt', root / 'tfds', **kwargs)

  second._read = no_reading  # names cached, records from the copies
  for split, examples in want.items():
    got = list(second.dataset(split).as_numpy_iterator())
    assert [int(ex['index']) for ex in got] == [
      int(ex['index']) for ex in examples
    ]
    for a, b in zip(got, examples, strict=True):
      np.testing.assert_array_equal(a['image'], b['image'])
      assert a['label'] == b['label']
  sub = list(second.dataset('train', [2]).as_numpy_iterator())
  assert len(sub) == 1 and sub[0]['label'] == want['train'][2]['label']


def test_places_lt_missing_list_and_image(places):
  root, _, _ = places
  lists = root / 'Places_LT_v2'
  with pytest.raises(ValueError, match='places_lt_dir'):
    ts.TfdsSource('places_lt', root / 'tfds')
  (lists / 'Places_LT_val.txt').unlink()
  with pytest.raises(FileNotFoundError, match='Places_LT_val.txt') as e:
    ts.TfdsSource('places_lt', root / 'tfds', places_lt_dir=lists)
  assert 'OpenLongTailRecognition-OLTR' in str(e.value)
  (lists / 'Places_LT_val.txt').write_text('data_256/z/zoo/00000001.jpg 3\n')
  source = ts.TfdsSource('places_lt', root / 'tfds', places_lt_dir=lists)
  with pytest.raises(ValueError, match='zoo'):
    source.labels('val')


def test_source_feeds_the_training_pipeline(cifar):
  split = cifar.dev_split()
  ds = cifar.dataset('train', split.dev, decode=False)
  batches = tf_pipeline.train_batches(
    ds, batch_size=25, seed=0, image_size=16, shuffle_buffer=100
  )
  seen = np.concatenate([next(batches)['label'] for _ in range(4)])
  np.testing.assert_array_equal(np.bincount(seen), [10] * 10)
