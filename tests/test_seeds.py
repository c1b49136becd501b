"""Vectorized seeds equal separate runs; bfloat16 compute stays close."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from ltjax import (
  config_lib,
  devices,
  inputs,
  methods,
  models,
  train,
  train_step,
)

REPO = pathlib.Path(__file__).resolve().parents[1]


def cifar10_config(arg):
  return config_lib.from_file(REPO / 'configs' / 'cifar10_lt.py', arg)


def tiny_config(data_dir, method='ours_ce'):
  """A tiny model on 300 generated 8x8 images of 6 classes (written to
  ``data_dir/train.npz`` once), imbalance 5, batches of 16."""
  path = data_dir / 'train.npz'
  if not path.exists():
    rng = np.random.default_rng(0)
    labels = np.arange(300) % 6
    images = rng.integers(0, 256, (300, 8, 8, 3), np.uint8)
    np.savez(path, image=images, label=labels)
  config = cifar10_config(f'method={method},source=npz')
  config.num_classes = 6
  config.model = 'tiny'
  config.data.dir = str(data_dir)
  config.data.train_file = 'train.npz'
  config.data.test_per_class = 5
  config.data.imbalance = 5.0
  config.batch_size = config.dev_batch_size = 16
  config.eval_batch_size = 30
  return config


def tiny_setup(tmp_path, **overrides):
  config = tiny_config(tmp_path)
  for k, v in overrides.items():
    config[k] = v
  mesh = devices.make_mesh()
  data = inputs.DeviceInput(config, mesh)
  method = methods.get_method('ours_ce')
  model = train.create_model(config, 6, method)
  return config, mesh, data, method, model


def test_vmapped_seeds_equal_separate_runs(tmp_path):
  config, _, data, method, model = tiny_setup(tmp_path)
  keys = [jax.random.split(jax.random.key(s), 3) for s in (11, 12)]
  init = lambda k: train_step.init_state(  # noqa: E731
    model, config, 6, data.image_shape, data.steps_per_epoch, k
  )
  for stage in ('plain', 'ours'):
    update = train_step.make_update_fn(
      stage, model, method, config, data.class_counts, data.steps_per_epoch
    )
    separate = []
    step = train_step.make_train_step(update, data)  # one compile, two seeds
    for k_init, k_train, k_dev in keys:
      feeds = data.train_feeds(k_train, k_dev, 0, 0)
      state = init(k_init)
      for _ in range(2):
        state, _ = step(state, next(feeds))
      separate.append(state)
    stacked = [jnp.stack([k[i] for k in keys]) for i in range(3)]
    step = train_step.make_train_step(update, data, 2)
    feeds = data.train_feeds(stacked[1], stacked[2], 0, 0)
    state = jax.vmap(init)(stacked[0])
    for _ in range(2):
      state, _ = step(state, next(feeds))
    for s in range(2):
      for a, b in zip(
        jax.tree.leaves(jax.tree.map(lambda x, s=s: x[s], state.params)),
        jax.tree.leaves(separate[s].params),
        strict=True,
      ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Different seeds, different runs.
    assert not np.allclose(
      jax.tree.leaves(separate[0].params)[0],
      jax.tree.leaves(separate[1].params)[0],
    )


def test_bfloat16_compute_is_close_to_float32():
  x = jax.random.normal(jax.random.key(0), (8, 32, 32, 3))
  f32 = models.ResNet32(num_classes=10)
  bf16 = models.ResNet32(num_classes=10, dtype=jnp.bfloat16)
  variables = f32.init(jax.random.key(1), x, train=False)
  a = f32.apply(variables, x, train=True, mutable=['batch_stats'])[0]
  b = bf16.apply(variables, x, train=True, mutable=['batch_stats'])[0]
  assert b.dtype == jnp.bfloat16
  assert jax.tree.leaves(variables['params'])[0].dtype == jnp.float32
  err = float(jnp.max(jnp.abs(a - b.astype(jnp.float32))))
  assert err < 0.05 * float(jnp.max(jnp.abs(a))), err


def test_bfloat16_meta_step_losses_stay_float32(tmp_path):
  config, _, data, method, model = tiny_setup(
    tmp_path, compute_dtype='bfloat16'
  )
  update = train_step.make_update_fn(
    'ours', model, method, config, data.class_counts, data.steps_per_epoch
  )
  k = jax.random.split(jax.random.key(0), 3)
  step = train_step.make_train_step(update, data)
  feeds = data.train_feeds(k[1], k[2], 0, 0)
  state = train_step.init_state(
    model, config, 6, data.image_shape, data.steps_per_epoch, k[0]
  )
  state, metrics = step(state, next(feeds))
  assert metrics['train/loss'].dtype == jnp.float32
  assert np.isfinite(float(metrics['train/loss']))
  assert float(jnp.abs(state.weight_stats[:, 1]).sum()) > 0  # ε learned
