"""Tests of ltjax.data.tf_pipeline: augmentation, batching, determinism."""

import numpy as np
import pytest

tf = pytest.importorskip('tensorflow')

from ltjax.data import tf_pipeline as tp  # noqa: E402

MEAN = np.array(tp.IMAGENET_MEAN, np.float32)
STD = np.array(tp.IMAGENET_STD, np.float32)


def images(n, seed=0):
  """``n`` random uint8 images of two sizes; example ``i`` has label ``i``."""
  rng = np.random.default_rng(seed)
  return [
    rng.integers(0, 256, (30, 40, 3) if i % 2 else (44, 36, 3), np.uint8)
    for i in range(n)
  ]


def dataset(imgs, encode=None):
  """``{'image', 'label'}`` with ``label = i``; images encoded or raw."""
  if encode == 'jpeg':  # 4:4:4, so that crop-decoding is exact
    data = [tf.io.encode_jpeg(im, chroma_downsampling=False) for im in imgs]
  elif encode == 'png':
    data = [tf.io.encode_png(im) for im in imgs]
  else:
    return tf.data.Dataset.from_generator(
      lambda: ({'image': im, 'label': i} for i, im in enumerate(imgs)),
      output_signature={
        'image': tf.TensorSpec([None, None, 3], tf.uint8),
        'label': tf.TensorSpec([], tf.int64),
      },
    ).apply(tf.data.experimental.assert_cardinality(len(imgs)))
  return tf.data.Dataset.from_tensor_slices(
    {'image': tf.stack(data), 'label': np.arange(len(imgs))}
  )


def take(iterator, k):
  return [next(iterator) for _ in range(k)]


def train(ds, **kwargs):
  kwargs = {'batch_size': 4, 'seed': 0, 'image_size': 16, **kwargs}
  return tp.train_batches(ds, shuffle_buffer=64, **kwargs)


def assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b, strict=True):
    np.testing.assert_array_equal(x['label'], y['label'])
    np.testing.assert_array_equal(x['image'], y['image'])


def test_train_batch_shapes_and_epochs():
  ds = dataset(images(22), 'jpeg')
  batches = take(train(ds), 10)
  for b in batches:
    assert b['image'].shape == (4, 16, 16, 3) and b['image'].dtype == np.float32
    assert b['label'].shape == (4,) and b['label'].dtype == np.int32
    lo, hi = (0 - MEAN) / STD, (255 - MEAN) / STD
    assert np.all(b['image'] >= lo.min() - 1e-4)
    assert np.all(b['image'] <= hi.max() + 1e-4)
  # 22 // 4 = 5 steps per epoch: each epoch is 20 distinct examples, and the
  # two epochs are shuffled differently.
  epochs = [
    np.concatenate([b['label'] for b in batches[e : e + 5]]) for e in (0, 5)
  ]
  for labels in epochs:
    assert len(set(labels)) == 20 and labels.max() < 22
  assert not np.array_equal(epochs[0], epochs[1])


def test_normalization_of_a_constant_image():
  color = np.array([10, 128, 250], np.uint8)
  im = np.broadcast_to(color, (30, 50, 3)).copy()
  want = (color - MEAN) / STD
  b = next(train(dataset([im] * 4, 'png')))
  np.testing.assert_allclose(
    b['image'], np.broadcast_to(want, b['image'].shape), atol=1e-5
  )
  e = next(
    tp.eval_batches(
      dataset([im], 'png'), batch_size=1, image_size=16, resize_size=20
    )
  )
  np.testing.assert_allclose(
    e['image'][0], np.broadcast_to(want, (16, 16, 3)), atol=1e-5
  )


def test_eval_resize_keeps_the_224_of_256_crop_ratio():
  # The protocol's Resize(256) + CenterCrop(224), and that ratio elsewhere.
  sizes = {224: 256, 112: 128, 32: 37, 16: 18}
  assert {s: tp.eval_resize_size(s) for s in sizes} == sizes
  # 42 x 84, rows numbered: the default for a 32 crop resizes to 37 x 74
  # and crops its center, as an explicit resize_size=37 does.
  x = np.arange(42, dtype=np.uint8) * 3
  im = np.broadcast_to(x[:, None, None], (42, 84, 3)).copy()
  default, explicit = (
    next(tp.eval_batches(dataset([im]), batch_size=1, image_size=32, **kw))
    for kw in ({}, {'resize_size': 37})
  )
  np.testing.assert_array_equal(default['image'], explicit['image'])
  # Rows 2 to 33 of the 37, rows 2.3 to 37.5 of the image's 42 (a crop of
  # 32 of the 256 rows it would be resized to by default before: 16 to 21).
  row = default['image'][0, :, 0, 0] * STD[0] + MEAN[0]
  assert 3 * 1.5 < row[0] < 3 * 3 and 3 * 37 < row[-1] < 3 * 38.5, row


def test_eval_center_crop():
  # 40 x 80, shorter side already 40: no resizing, crop columns 20..59.
  x = np.arange(80, dtype=np.uint8) * 3
  im = np.broadcast_to(x[None, :, None], (40, 80, 3)).copy()
  out = next(
    tp.eval_batches(dataset([im]), batch_size=1, image_size=40, resize_size=40)
  )
  np.testing.assert_allclose(
    out['image'][0], (im[:, 20:60] - MEAN) / STD, atol=1e-4
  )


def test_encoded_and_decoded_inputs_give_the_same_batches():
  # JPEG bytes take the decode-and-crop path, PNG bytes the decode-then-crop
  # one, uint8 arrays no decoding: all must crop the same window.
  jpegs = [
    tf.io.encode_jpeg(im, chroma_downsampling=False) for im in images(12)
  ]
  decoded = [tf.io.decode_jpeg(b).numpy() for b in jpegs]
  want = take(train(dataset(decoded)), 6)
  from_jpeg = tf.data.Dataset.from_tensor_slices(
    {'image': tf.stack(jpegs), 'label': np.arange(12)}
  )
  assert_same_batches(take(train(from_jpeg), 6), want)
  assert_same_batches(take(train(dataset(decoded, 'png')), 6), want)


def test_same_seed_same_batches_other_seed_other_batches():
  ds = dataset(images(16), 'jpeg')
  a, b = take(train(ds, seed=5), 6), take(train(ds, seed=5), 6)
  assert_same_batches(a, b)
  c = take(train(ds, seed=6), 6)
  assert not all(
    np.array_equal(x['label'], y['label']) for x, y in zip(a, c, strict=True)
  )


def test_resume_equals_the_tail_of_an_uninterrupted_run():
  ds = dataset(images(18), 'jpeg')  # 4 steps per epoch
  full = take(train(ds, seed=2), 11)
  for k in (3, 4, 6):
    assert_same_batches(take(train(ds, seed=2, start_step=k), 11 - k), full[k:])


def test_hosts_partition_each_global_batch():
  ds = dataset(images(26), 'jpeg')  # 3 global batches of 8 per epoch
  single = take(train(ds, batch_size=8, seed=1), 6)
  hosts = [
    take(train(ds, batch_size=4, seed=1, process_index=p, process_count=2), 6)
    for p in (0, 1)
  ]
  for step in range(6):
    a, b = hosts[0][step], hosts[1][step]
    assert not set(a['label']) & set(b['label'])
    union = np.concatenate([a['label'], b['label']])
    np.testing.assert_array_equal(
      np.sort(union), np.sort(single[step]['label'])
    )
    # The same example gets the same augmentation on either layout.
    images_by_label = dict(
      zip(union, np.concatenate([a['image'], b['image']]), strict=True)
    )
    for label, image in zip(
      single[step]['label'], single[step]['image'], strict=True
    ):
      np.testing.assert_array_equal(images_by_label[label], image)


@pytest.mark.parametrize('process_count', [1, 2, 3])
def test_eval_counts_every_example_once(process_count):
  n, batch = 11, 4
  ds = dataset(images(n), 'jpeg')
  seen, num_batches = [], set()
  for p in range(process_count):
    out = list(
      tp.eval_batches(
        ds,
        batch_size=batch,
        image_size=16,
        resize_size=20,
        process_index=p,
        process_count=process_count,
      )
    )
    num_batches.add(len(out))
    for b in out:
      assert b['image'].shape == (batch, 16, 16, 3) and b['mask'].dtype == bool
      seen.extend(b['label'][b['mask']])
      np.testing.assert_array_equal(b['image'][~b['mask']], 0)
  assert len(num_batches) == 1  # every host runs the same number of steps
  np.testing.assert_array_equal(np.sort(seen), np.arange(n))


def test_errors():
  ds = dataset(images(6), 'jpeg')
  with pytest.raises(ValueError, match='no full global batch'):
    next(train(ds, batch_size=4, process_count=2))
  with pytest.raises(ValueError, match='num_examples'):
    next(train(ds.filter(lambda ex: True)))
  with pytest.raises(ValueError, match='process_index'):
    next(train(ds, process_index=2, process_count=2))
  with pytest.raises(tf.errors.OpError, match='expected to contain 5'):
    list(
      tp.eval_batches(
        ds, batch_size=4, num_examples=5, image_size=16, resize_size=20
      )
    )


def test_sampled_epochs_hit_their_class_frequencies_and_resume_exactly():
  """Class-balanced epochs of a 4:1 dataset: each class within a binomial
  bound of half the draws; a resumed stream equals the uninterrupted one."""
  from ltjax.data import device_pipeline

  n = 20
  labels = (np.arange(n) >= 16).astype(np.int64)  # 16 of class 0, 4 of 1
  p = device_pipeline.sampling_probabilities(labels, 'class')
  repeats = tp.epoch_repeats(p, seed=3, epoch=0)
  assert repeats.sum() == n and np.any(repeats != 1)
  np.testing.assert_array_equal(repeats, tp.epoch_repeats(p, seed=3, epoch=0))
  ds = dataset(images(n), 'jpeg')  # label i: example i
  stream = train(ds, seed=3, probabilities=p)  # 5 steps of 4 per epoch
  batches = take(stream, 5 * 40)
  drawn = np.concatenate([b['label'] for b in batches])
  np.testing.assert_array_equal(  # epoch 0 holds exactly its repeats
    np.bincount(drawn[:n], minlength=n), repeats
  )
  rare = np.sum(drawn >= 16)
  total = len(drawn)
  assert abs(rare - total / 2) <= 4.5 * np.sqrt(total / 4), rare
  assert_same_batches(
    take(train(ds, seed=3, probabilities=p, start_step=7), 6), batches[7:13]
  )
