"""CIFAR augmentation on the device against its definition and a NumPy twin."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax.data import augment
from ltjax.data import device_pipeline as pipeline
from ltjax.data.arrays import ArrayData


def images(n=16, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), np.uint8)


def test_every_crop_is_a_window_of_the_reflect_padded_image():
  x = images()
  key = jax.random.key(0)
  offsets, flips = augment.draw_crops_and_flips(key, len(x))
  out = np.asarray(augment.crop_and_flip(x, offsets, flips))
  for img, crop, flip in zip(x, out, np.asarray(flips), strict=True):
    padded = np.pad(img, ((4, 4), (4, 4), (0, 0)), mode='reflect')
    # The reflect pad mirrors without repeating the edge (torch 'reflect').
    np.testing.assert_array_equal(padded[3, 4:-4], img[1])
    windows = [
      (r, c)
      for r, c in itertools.product(range(9), repeat=2)
      if np.array_equal(
        crop[:, ::-1] if flip else crop, padded[r : r + 32, c : c + 32]
      )
    ]
    assert windows, 'crop is not a window of the padded image'


def test_flip_mirrors_and_draws_cover_the_range():
  x = images(2)
  out = augment.crop_and_flip(x, jnp.full((2, 2), 4), jnp.array([True, False]))
  np.testing.assert_array_equal(out[0], x[0, :, ::-1])
  np.testing.assert_array_equal(out[1], x[1])
  offsets, flips = augment.draw_crops_and_flips(jax.random.key(1), 4000)
  assert set(np.asarray(offsets).ravel().tolist()) == set(range(9))
  assert 0.45 < float(np.mean(flips)) < 0.55


def test_normalization_matches_official_constants():
  x = images(3)
  out = np.asarray(augment.normalize(x))
  mean = np.array([125.3, 123.0, 113.9]) / 255
  std = np.array([63.0, 62.1, 66.7]) / 255
  np.testing.assert_allclose(out, (x / 255 - mean) / std, rtol=1e-5, atol=1e-5)


def test_device_augmentation_equals_numpy_twin():
  x = images(32)
  key = jax.random.key(7)
  out = jax.jit(augment.augment)(key, x)
  offsets, flips = augment.draw_crops_and_flips(key, len(x))
  np.testing.assert_allclose(
    out, augment.augment_numpy(x, offsets, flips), rtol=1e-6, atol=1e-6
  )


def device_data(n, num_classes=10, seed=0):
  labels = np.arange(n) % num_classes
  return pipeline.to_device(ArrayData(images(n, seed), labels.astype(np.int32)))


def test_epoch_order_covers_each_example_once_and_reshuffles():
  key = jax.random.key(3)
  n, b = 53, 10  # 5 full batches; 3 examples left out, different per epoch
  indices = jax.jit(pipeline.epoch_batch_indices, static_argnums=(2, 3))
  epoch0 = np.concatenate([indices(key, s, n, b) for s in range(5)])
  epoch1 = np.concatenate([indices(key, s, n, b) for s in range(5, 10)])
  assert len(set(epoch0.tolist())) == 50 and len(set(epoch1.tolist())) == 50
  assert not np.array_equal(epoch0, epoch1)
  np.testing.assert_array_equal(indices(key, 7, n, b), epoch1[20:30])
  with pytest.raises(ValueError, match='batch size 60 exceeds the 53'):
    pipeline.steps_per_epoch(53, 60)


def test_train_batch_is_a_pure_function_of_key_and_step():
  data = device_data(40)
  step_fn = jax.jit(pipeline.train_batch, static_argnums=3)
  key = jax.random.key(0)
  a, b = step_fn(data, key, 5, 8), step_fn(data, key, 5, 8)
  np.testing.assert_array_equal(a['image'], b['image'])
  c = step_fn(data, key, 6, 8)
  assert not np.array_equal(a['label'], c['label']) or not np.array_equal(
    a['image'], c['image']
  )
  assert a['image'].shape == (8, 32, 32, 3) and a['image'].dtype == jnp.float32
  assert step_fn._cache_size() == 1  # the step is traced, not static


def test_dev_batch_draws_distinct_examples_with_matching_labels():
  data = device_data(30)
  batch = pipeline.dev_batch(data, jax.random.key(2), 30, augment=False)
  # Unaugmented images identify their examples: all 30, each once.
  flat = np.asarray(data.image).reshape(30, -1)
  normed = np.asarray(augment.normalize(flat.reshape(30, 32, 32, 3)))
  idx = [
    int(np.argmin(np.abs(normed.reshape(30, -1) - row.ravel()).sum(1)))
    for row in np.asarray(batch['image'])
  ]
  assert sorted(idx) == list(range(30))
  np.testing.assert_array_equal(batch['label'], np.asarray(data.label)[idx])
