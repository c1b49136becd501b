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
  config, mesh, data, method, model = tiny_setup(
    tmp_path, seed=11, num_seeds=2
  )
  keys = [jax.random.split(jax.random.key(s), 3) for s in (11, 12)]
  # Seed s of a vectorized run draws from the key of config.seed + s.
  stacked = train.seed_keys(config)
  for i, k in enumerate(stacked):
    np.testing.assert_array_equal(
      jax.random.key_data(k),
      jax.random.key_data(jnp.stack([key[i] for key in keys])),
    )
  # The trainer's init: replicated like the states the step returns, so
  # the second step reuses the first one's program.
  init = train.make_init_fn(config, model, data, mesh)
  # The meta stage: vmapping its unrolled inner step is the hard case
  # (the plain one is a part of it; test_train_run_benchmark vmaps both).
  for stage in ('ours',):
    update = train_step.make_update_fn(
      stage, model, method, config, data.class_counts, data.steps_per_epoch
    )
    step = train_step.make_train_step(update, data)  # one program, any seeds
    separate = []
    for k_init, k_train, k_dev in keys:  # a seed axis of size 1
      feeds = data.train_feeds(k_train[None], k_dev[None], 0, 0)
      state = init(k_init[None])
      for _ in range(2):
        state, _ = step(state, next(feeds))
      separate.append(state)
    feeds = data.train_feeds(stacked[1], stacked[2], 0, 0)
    state = init(stacked[0])
    for _ in range(2):
      state, _ = step(state, next(feeds))
    for s in range(2):
      for a, b in zip(
        jax.tree.leaves(jax.tree.map(lambda x, s=s: x[s], state.params)),
        jax.tree.leaves(jax.tree.map(lambda x: x[0], separate[s].params)),
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
  k_init, k_train, k_dev = train.seed_keys(config)
  step = train_step.make_train_step(update, data)
  feeds = data.train_feeds(k_train, k_dev, 0, 0)
  state = jax.vmap(
    lambda k: train_step.init_state(
      model, config, 6, data.image_shape, data.steps_per_epoch, k
    )
  )(k_init)
  state, metrics = step(state, next(feeds))
  assert metrics['train/loss'].dtype == jnp.float32
  assert np.all(np.isfinite(metrics['train/loss']))
  assert float(jnp.abs(state.weight_stats[0, :, 1]).sum()) > 0  # ε learned


def test_a_checkpoint_without_the_seed_axis_restores_as_seed_0(tmp_path):
  # An older ltjax kept one seed's state without the leading seed axis.
  from ltjax.checkpoint import Checkpointer

  config, mesh, data, _, model = tiny_setup(tmp_path)
  init = train.make_init_fn(config, model, data, mesh)
  k_init = train.seed_keys(config)[0]
  state = init(k_init)
  assert state.step.shape == (1,)
  old = jax.tree.map(lambda x: x[0], state).replace(
    step=jnp.asarray(7, jnp.int32)
  )
  ckpt = Checkpointer(tmp_path / 'run')
  ckpt.save(old)
  ckpt.wait()
  restored = train.restore_or_init_state(ckpt, init, k_init)
  ckpt.close()
  assert restored.step.shape == (1,) and int(restored.step[0]) == 7
  for a, b in zip(
    jax.tree.leaves(restored), jax.tree.leaves(old), strict=True
  ):
    np.testing.assert_array_equal(a[0], b)


def test_both_inputs_follow_the_input_protocol(tmp_path):
  import inspect

  _, _, data, _, _ = tiny_setup(tmp_path)
  assert isinstance(data, inputs.Input)  # every member, on an instance
  methods_ = ('train_feeds', 'batch', 'eval_batches', 'prepare_eval')
  fields = [n for n in inputs.Input.__annotations__ if n != 'feed_axes']
  source = inspect.getsource(inputs.HostInput)  # TensorFlow not needed
  for name in methods_:
    assert callable(getattr(inputs.HostInput, name)), name
  assert hasattr(inputs.HostInput, 'feed_axes')
  for name in fields:
    assert f'self.{name} =' in source or f'self.{name},' in source, name
