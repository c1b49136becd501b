"""The update steps of each stage against direct computations."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ltjax
from ltjax import config_lib, config_schema, methods, models, stages, train_step

COUNTS = np.array([50, 20, 8, 3])

REPO = pathlib.Path(__file__).resolve().parents[1]


def cifar10_config(arg):
  return config_lib.from_file(REPO / 'configs' / 'cifar10_lt.py', arg)


def setup(method='ours_ce'):
  config = cifar10_config(f'method={method}')
  cosine = methods.LOSSES[methods.get_method(method).loss].cosine_head
  model = models.TinyResNet(num_classes=4, cosine_head=cosine)
  state = train_step.init_state(
    model, config, 4, (8, 8, 3), 10, jax.random.key(0)
  )
  k1, k2 = jax.random.split(jax.random.key(1))
  batch = {
    'image': jax.random.normal(k1, (8, 8, 8, 3)),
    'label': jnp.arange(8) % 4,
  }
  dev = {'image': jax.random.normal(k2, (4, 8, 8, 3)), 'label': jnp.arange(4)}
  return config, model, state, batch, dev


def one_step(name, stage):
  """``setup(name)``, the state after one jitted ``stage`` update, and the
  CE ``loss_fn`` of the model, for a direct computation to compare with."""
  config, model, state, batch, dev = setup(name)
  update = train_step.make_update_fn(
    stage, model, methods.get_method(name), config, COUNTS, 10
  )
  new, _ = jax.jit(update)(state, batch, dev)
  loss_fn = ltjax.models.make_loss_fn(model, ltjax.softmax_cross_entropy)
  return config, model, state, batch, dev, new, loss_fn


def sgd_step(config, state, grads, lr):
  opt = optax.chain(
    optax.add_decayed_weights(config.weight_decay),
    optax.sgd(lr, momentum=0.9, nesterov=True),
  )
  updates, _ = opt.update(grads, opt.init(state.params), state.params)
  return optax.apply_updates(state.params, updates)


def assert_trees_close(a, b, **kw):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(x, y, **kw)


@pytest.mark.parametrize('stage', ['plain', 'cb'])
def test_plain_and_class_balanced_stages(stage):
  config, model, state, batch, dev = setup('cb_ce')
  method = methods.get_method('cb_ce')
  update = train_step.make_update_fn(stage, model, method, config, COUNTS, 10)
  new, metrics = jax.jit(update)(state, batch, dev)
  w = ltjax.class_balanced_weights(COUNTS) if stage == 'cb' else np.ones(4)
  loss_fn = ltjax.models.make_loss_fn(model, ltjax.softmax_cross_entropy)

  def loss(p):
    per_ex, _ = loss_fn(p, state.batch_stats, batch)
    return jnp.mean(jnp.asarray(w)[batch['label']] * per_ex)

  value, grads = jax.value_and_grad(loss)(state.params)
  np.testing.assert_allclose(metrics['train/loss'], value, rtol=1e-6)
  assert_trees_close(
    new.params, sgd_step(config, state, grads, 0.1), rtol=2e-5, atol=1e-7
  )
  assert int(new.step) == 1 and int(new.first_bad_step) == -1


def test_ours_stage_applies_the_meta_step():
  config, model, state, batch, dev, new, loss_fn = one_step('ours_ce', 'ours')
  w = jnp.asarray(ltjax.class_balanced_weights(COUNTS), jnp.float32)
  out = ltjax.meta_step(
    loss_fn, state.params, state.batch_stats, batch, dev,
    w[batch['label']], inner_lr=0.1, eps_lr=0.01,
  )  # fmt: skip
  assert_trees_close(
    new.params, sgd_step(config, state, out.grads, 0.1), rtol=2e-5, atol=1e-7
  )
  # Per-class statistics of ε and w + ε, accumulated for the figure.
  stats = np.asarray(new.weight_stats)
  np.testing.assert_array_equal(stats[:, 0], [2, 2, 2, 2])
  eps = np.asarray(out.eps)
  labels = np.asarray(batch['label'])
  for c in range(4):
    np.testing.assert_allclose(
      stats[c, 1], eps[labels == c].sum(), rtol=1e-5, atol=1e-9
    )
    np.testing.assert_allclose(
      stats[c, 3], (w[c] + eps[labels == c]).sum(), rtol=1e-5
    )


def direct_eps_grad(loss_fn, state, batch, dev, base_w, lr, c):
  """``∂/∂ε mean_dev ℓ(θ - lr ∇_θ c Σ_i (w_i + ε_i) ℓ_i(θ))`` at ε = 0,
  by ``jax.grad`` of that expression written out (no ltjax.meta)."""
  ms = state.batch_stats

  def dev_loss(eps):
    def inner(p):
      return c * jnp.sum((base_w + eps) * loss_fn(p, ms, batch)[0])

    g = jax.grad(inner)(state.params)
    tilde = jax.tree.map(lambda p, q: p - lr * q, state.params, g)
    return jnp.mean(loss_fn(tilde, ms, dev)[0])

  return jax.grad(dev_loss)(jnp.zeros(batch['label'].shape[0]))


def weighted_grads(loss_fn, state, batch, weights):
  def loss(p):
    return jnp.mean(weights * loss_fn(p, state.batch_stats, batch)[0])

  return jax.grad(loss)(state.params)


def test_l2rw_stage_against_its_definition():
  config, model, state, batch, dev, new, loss_fn = one_step('l2rw', 'l2rw')
  g = direct_eps_grad(loss_fn, state, batch, dev, 0.0, 0.1, 1.0)
  raw = jnp.maximum(-g, 0.0)
  assert float(raw.sum()) > 0  # some example helps: the weights are defined
  weights = raw / raw.sum() * raw.shape[0]  # Ren et al., normalized, × |B|
  grads = weighted_grads(loss_fn, state, batch, weights)
  assert_trees_close(
    new.params, sgd_step(config, state, grads, 0.1), rtol=1e-4, atol=1e-6
  )


def test_mwn_stage_against_its_definition():
  config, model, state, batch, dev, new, loss_fn = one_step('mwn', 'mwn')
  vnet = ltjax.meta_baselines.MetaWeightNet(config.mwn_hidden)

  def v(phi, losses):
    return vnet.apply({'params': phi}, losses)

  losses = loss_fn(state.params, state.batch_stats, batch)[0]
  w = v(state.vnet_params, losses)
  b = losses.shape[0]
  g = direct_eps_grad(loss_fn, state, batch, dev, w, 0.1, 1.0 / b)
  # φ: one step of Adam with L2 weight decay on Σ_i g_i ∂V(ℓ_i; φ)/∂φ.
  phi_grads = jax.grad(lambda phi: jnp.sum(v(phi, losses) * g))(
    state.vnet_params
  )
  opt = optax.chain(
    optax.add_decayed_weights(config.mwn_wd), optax.adam(config.mwn_lr)
  )
  updates, _ = opt.update(
    phi_grads, opt.init(state.vnet_params), state.vnet_params
  )
  phi = optax.apply_updates(state.vnet_params, updates)
  assert_trees_close(new.vnet_params, phi, rtol=1e-5, atol=1e-7)
  grads = weighted_grads(loss_fn, state, batch, v(phi, losses))
  assert_trees_close(
    new.params, sgd_step(config, state, grads, 0.1), rtol=1e-4, atol=1e-6
  )


# Every (loss, stage) pair that some method of the paper's tables runs.
PAIRS = sorted(
  {
    (name, stage)
    for name, m in methods.METHODS.items()
    for stage in (m.stage1, m.stage2)
    if name
    == min(
      n
      for n, o in methods.METHODS.items()
      if o.loss == m.loss and stage in (o.stage1, o.stage2)
    )
  }
)


def test_pairs_cover_every_method():
  covered = {(methods.METHODS[n].loss, s) for n, s in PAIRS}
  for m in methods.METHODS.values():
    assert {(m.loss, m.stage1), (m.loss, m.stage2)} <= covered


def enter(stage, config, model, state):
  """``state`` at the start of ``stage`` (a fresh classifier from key 5)."""
  spec = methods.STAGES[stage]
  if not spec.enters:
    return state
  fresh = model.init(jax.random.key(5), jnp.zeros((1, 8, 8, 3)), train=False)
  return stages.enter_stage(
    state,
    trains=spec.trains,
    reinit_classifier=spec.reinit_classifier,
    fresh_params=fresh['params'],
    optimizer=train_step.stage_optimizer(spec, config, 10)[0],
  )


@pytest.mark.parametrize('name, stage', PAIRS)
def test_every_stage_of_every_method_runs(name, stage):
  config, model, state, batch, dev = setup(name)
  state = enter(stage, config, model, state)
  method = methods.get_method(name)
  update = train_step.make_update_fn(stage, model, method, config, COUNTS, 10)
  new, metrics = jax.jit(update)(state, batch, dev)
  assert np.isfinite(metrics['train/loss'])

  def changed(a, b):
    return any(
      jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.any(x != y)), a, b))
    )

  assert changed(new.params, state.params)
  if stage == 'mwn':
    assert changed(new.vnet_params, state.vnet_params)


def test_learning_rate_schedule_and_warmup():
  config = cifar10_config('method=ce')
  lr = jax.jit(train_step.learning_rate_fn(config, 10))
  # lr x 0.01 at epoch 160 and again at 180 (10 steps per epoch).
  assert float(lr(1599)) == pytest.approx(0.1)
  assert float(lr(1600)) == pytest.approx(1e-3)
  assert float(lr(1800)) == pytest.approx(1e-5)
  config = cifar10_config('method=ldam_drw')
  lr = train_step.learning_rate_fn(config, 10)
  assert config.warmup_epochs == 5
  assert [float(lr(s)) for s in (0, 10, 40, 50)] == pytest.approx(
    [0.02, 0.04, 0.1, 0.1]
  )


def test_learning_rate_scales_linearly_with_the_batch_size():
  config = cifar10_config('method=ce')  # batch 100, lr 0.1
  config.batch_size = 50
  lr = train_step.learning_rate_fn(config, 10)
  assert [float(lr(s)) for s in (0, 1599, 1600)] == pytest.approx(
    [0.05, 0.05, 5e-4]
  )
  config.scale_lr_with_batch = False
  assert float(train_step.learning_rate_fn(config, 10)(0)) == pytest.approx(0.1)
  config.scale_lr_with_batch, config.batch_size = True, 100
  assert config_lib.effective_learning_rate(config) == 0.1  # exactly


def test_non_finite_loss_is_recorded_with_its_step():
  config, model, state, batch, dev = setup('ce')
  update = jax.jit(
    train_step.make_update_fn(
      'plain', model, methods.get_method('ce'), config, COUNTS, 10
    )
  )
  state, _ = update(state, batch, dev)
  bad = dict(batch, image=batch['image'].at[0, 0, 0, 0].set(jnp.nan))
  state, _ = update(state, bad, dev)
  state, _ = update(state, batch, dev)
  assert int(state.first_bad_step) == 1


def test_unknown_method():
  with pytest.raises(ValueError, match="unknown method 'x'.*'ours_ce'"):
    methods.get_method('x')


def test_a_method_registered_from_your_code_is_one_row(monkeypatch):
  """docs/training.md's recipe: a row of LOSSES and one of METHODS, added
  from outside the package, make a method that the config accepts and the
  stages train with (``per_example_loss`` is the loss every stage takes)."""

  def doubled_ce(config, counts):
    del config, counts
    return lambda logits, labels: (
      2 * ltjax.softmax_cross_entropy(logits, labels)
    )

  monkeypatch.setitem(methods.LOSSES, 'doubled_ce', methods.Loss(doubled_ce))
  monkeypatch.setitem(
    methods.METHODS, 'mine', methods.Method('doubled_ce', 'plain', 'ours')
  )
  config = cifar10_config('method=mine')
  config_lib.check_config(config)
  with pytest.raises(ltjax.ConfigError, match="unknown method 'mien'.*'mine'"):
    config_lib.check_config(cifar10_config('method=mien'))
  # The schema's rule lists the new row too (its message is read when shown).
  assert "'mine'" in config_schema.SCHEMA['method'].check(5)
  method = methods.get_method(config.method)
  assert method.uses_meta  # stage 2 is the paper's: ε on top of the row
  logits = jax.random.normal(jax.random.key(0), (8, 4))
  labels = jnp.arange(8) % 4
  mine, ce = (
    methods.per_example_loss(m, config, COUNTS)(logits, labels)
    for m in (method, methods.get_method('ce'))
  )
  np.testing.assert_array_equal(mine, 2 * ce)  # x2 is exact
  assert float(ce.min()) > 0
