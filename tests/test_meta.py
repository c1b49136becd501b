"""meta_step: finite differences, fast vs plain form, BatchNorm rule, tracing."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ltjax
from ltjax import models


def rel_err(a, b):
  """max |a - b| / max |b| over a pytree."""
  diffs = jax.tree.map(lambda x, y: float(jnp.max(jnp.abs(x - y))), a, b)
  scales = jax.tree.map(lambda y: float(jnp.max(jnp.abs(y))), b)
  return max(jax.tree.leaves(diffs)) / max(jax.tree.leaves(scales))


def mlp_loss_fn(params, state, batch):
  hidden = jnp.tanh(batch['x'] @ params['w1'] + params['b1'])
  logits = hidden @ params['w2'] + params['b2']
  return ltjax.softmax_cross_entropy(logits, batch['y']), state


def mlp_problem(dtype, batch_size=10, dev_size=8, dim=6, classes=4):
  keys = jax.random.split(jax.random.key(42), 6)
  params = {
    'w1': jax.random.normal(keys[0], (dim, 16), dtype) / np.sqrt(dim),
    'b1': jax.random.normal(keys[1], (16,), dtype) * 0.1,
    'w2': jax.random.normal(keys[2], (16, classes), dtype) / 4,
    'b2': jnp.zeros((classes,), dtype),
  }
  batch = {
    'x': jax.random.normal(keys[3], (batch_size, dim), dtype),
    'y': jnp.arange(batch_size) % classes,
  }
  dev = {
    'x': jax.random.normal(keys[4], (dev_size, dim), dtype),
    'y': jnp.arange(dev_size) % classes,
  }
  w = jax.random.uniform(keys[5], (batch_size,), dtype, 0.3, 2.5)
  return params, batch, dev, w


def unrolled_dev_loss(eps, params, batch, dev, w, inner_lr, scale):
  """L_D(θ - η ∇_θ scale Σ (w + ε) ℓ), written out independently."""

  def inner(p):
    return scale * jnp.sum((w + eps) * mlp_loss_fn(p, None, batch)[0])

  grads = jax.grad(inner)(params)
  tilde = jax.tree.map(lambda p, g: p - inner_lr * g, params, grads)
  return mlp_loss_fn(tilde, None, dev)[0].mean()


@pytest.mark.parametrize('eps_grad', ['jvp', 'unroll'])
@pytest.mark.parametrize('reduction', ['sum', 'mean'])
def test_eps_gradient_matches_finite_differences(eps_grad, reduction):
  with jax.enable_x64(True):
    params, batch, dev, w = mlp_problem(jnp.float64)
    inner_lr, tau = 0.3, 0.01
    scale = 1.0 if reduction == 'sum' else 1.0 / len(w)
    out = ltjax.meta_step(
      mlp_loss_fn, params, None, batch, dev, w, inner_lr=inner_lr,
      eps_lr=tau, reduction=reduction, eps_grad=eps_grad,
    )  # fmt: skip
    f = jax.jit(
      lambda e: unrolled_dev_loss(e, params, batch, dev, w, inner_lr, scale)
    )
    h = 1e-5
    basis = np.eye(len(w))
    fd = np.array([(f(h * e) - f(-h * e)) / (2 * h) for e in basis], np.float64)
    grad_eps = -np.asarray(out.eps) / tau
    assert np.max(np.abs(fd)) > 1e-3  # a non-trivial gradient
    assert rel_err(grad_eps, fd) < 1e-7
    assert float(out.dev_loss) == pytest.approx(float(f(jnp.zeros(len(w)))))


def test_final_gradient_and_losses():
  with jax.enable_x64(True):
    params, batch, dev, w = mlp_problem(jnp.float64)
    out = ltjax.meta_step(
      mlp_loss_fn, params, None, batch, dev, w, inner_lr=1.0
    )
    np.testing.assert_allclose(out.weights, w + out.eps, rtol=0, atol=0)

    def final(p):
      return jnp.mean((w + out.eps) * mlp_loss_fn(p, None, batch)[0])

    loss, grads = jax.value_and_grad(final)(params)
    assert rel_err(out.grads, grads) < 1e-12
    assert float(out.train_loss) == pytest.approx(float(loss), rel=1e-12)
    np.testing.assert_allclose(
      out.losses, mlp_loss_fn(params, None, batch)[0], rtol=1e-12
    )


def test_mean_reduction_is_sum_with_scaled_inner_lr():
  with jax.enable_x64(True):
    params, batch, dev, w = mlp_problem(jnp.float64)
    mean = ltjax.meta_step(
      mlp_loss_fn, params, None, batch, dev, w, inner_lr=0.5, reduction='mean'
    )
    summed = ltjax.meta_step(
      mlp_loss_fn, params, None, batch, dev, w, inner_lr=0.5 / len(w)
    )
    assert rel_err(mean.eps, summed.eps) < 1e-12
    assert rel_err(mean.grads, summed.grads) < 1e-12


def tiny_resnet_problem(dtype):
  model = models.TinyResNet(num_classes=5)
  keys = jax.random.split(jax.random.key(0), 4)
  batch = {
    'image': jax.random.normal(keys[0], (12, 16, 16, 3), dtype),
    'label': jnp.arange(12) % 5,
  }
  dev = {
    'image': jax.random.normal(keys[1], (10, 16, 16, 3), dtype),
    'label': jnp.arange(10) % 5,
  }
  variables = model.init(keys[2], batch['image'][:1], train=False)
  variables = jax.tree.map(lambda a: a.astype(dtype), variables)
  weights = jnp.asarray(ltjax.class_balanced_weights([60, 30, 12, 5, 2]))
  loss_fn = models.make_loss_fn(model, ltjax.softmax_cross_entropy)
  return loss_fn, variables, batch, dev, weights[batch['label']].astype(dtype)


@pytest.mark.parametrize('dtype, tol', [('float64', 1e-10), ('float32', 1e-3)])
def test_fast_and_plain_forms_agree_with_batchnorm(dtype, tol):
  with jax.enable_x64(dtype == 'float64'):
    loss_fn, variables, batch, dev, w = tiny_resnet_problem(jnp.dtype(dtype))
    outs = [
      ltjax.meta_step(
        loss_fn,
        variables['params'],
        variables['batch_stats'],
        batch,
        dev,
        w,
        inner_lr=0.5,
        eps_grad=method,
      )  # fmt: skip
      for method in ('jvp', 'unroll')
    ]
    fast, plain = outs
    assert fast.eps.dtype == jnp.dtype(dtype)
    assert float(jnp.max(jnp.abs(plain.eps))) > 1e-4  # non-trivial ε
    for field in ('eps', 'weights', 'dev_loss', 'train_loss', 'grads'):
      err = rel_err(getattr(fast, field), getattr(plain, field))
      assert err < tol, (field, err)
    assert rel_err(fast.model_state, plain.model_state) < tol


@pytest.mark.parametrize('eps_grad', ['jvp', 'unroll'])
def test_batch_stats_come_from_the_final_pass_only(eps_grad):
  with jax.enable_x64(True):
    loss_fn, variables, batch, dev, w = tiny_resnet_problem(jnp.float64)
    params, stats = variables['params'], variables['batch_stats']
    out = ltjax.meta_step(
      loss_fn, params, stats, batch, dev, w, inner_lr=0.5, eps_grad=eps_grad
    )
    # Exactly one training-mode pass at θ on the training batch.
    _, expected = loss_fn(params, stats, batch)
    assert rel_err(out.model_state, expected) < 1e-14
    # Not the stats after the dev pass, nor after two updates.
    _, after_dev = loss_fn(params, stats, dev)
    _, twice = loss_fn(params, expected, batch)
    assert rel_err(out.model_state, after_dev) > 1e-3
    assert rel_err(out.model_state, twice) > 1e-3


def test_jitted_training_step_traces_once():
  loss_fn, variables, batch, dev, w = tiny_resnet_problem(jnp.float32)
  traces = []

  def counting_loss_fn(params, state, batch):
    traces.append(1)  # Runs only while tracing.
    return loss_fn(params, state, batch)

  opt = optax.chain(
    optax.add_decayed_weights(5e-4),
    optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9),
  )

  @jax.jit
  def train_step(params, stats, opt_state, batch, dev, w, lr):
    opt_state[1].hyperparams['learning_rate'] = lr
    out = ltjax.meta_step(
      counting_loss_fn, params, stats, batch, dev, w, inner_lr=lr
    )
    updates, opt_state = opt.update(out.grads, opt_state, params)
    return optax.apply_updates(params, updates), out.model_state, opt_state

  params, stats = variables['params'], variables['batch_stats']
  opt_state = opt.init(params)
  counts = []
  for step in range(4):
    key = jax.random.key(step)
    batch = {**batch, 'image': jax.random.normal(key, batch['image'].shape)}
    lr = jnp.float32(0.1 / (step + 1))
    params, stats, opt_state = train_step(
      params, stats, opt_state, batch, dev, w, lr
    )
    counts.append(len(traces))
  assert counts[0] > 0
  assert counts == [counts[0]] * 4, counts
  assert train_step._cache_size() == 1


def test_bad_inputs():
  params, batch, dev, w = mlp_problem(jnp.float32)
  call = lambda **kw: ltjax.meta_step(  # noqa: E731
    mlp_loss_fn, params, None, batch, dev, kw.pop('w', w), inner_lr=0.1, **kw
  )
  with pytest.raises(ValueError, match='reduction must be one of'):
    call(reduction='avg')
  with pytest.raises(ValueError, match='eps_grad must be one of'):
    call(eps_grad='hessian')
  with pytest.raises(ValueError, match='one weight per training example'):
    call(w=w[:3])

  def scalar_loss_fn(p, s, b):
    return mlp_loss_fn(p, s, b)[0].mean(), s

  with pytest.raises(ValueError, match='per-example losses of shape'):
    ltjax.meta_step(scalar_loss_fn, params, None, batch, dev, w, inner_lr=0.1)


def test_meta_step_memory_stays_near_a_cross_entropy_step():
  # XLA's buffer plan for the compiled steps: deterministic, not timed. The
  # meta step recomputes the training pass after the dev pass instead of
  # holding its activations through it (1.14x here; holding them: 2.7x).
  model = models.CifarResNet(10, (1, 1, 1), (8, 16, 32))
  loss_fn = models.make_loss_fn(model, ltjax.softmax_cross_entropy)
  batch = {'image': jnp.zeros((64, 32, 32, 3)), 'label': jnp.zeros(64, int)}
  variables = model.init(jax.random.key(0), batch['image'][:1], train=False)
  args = (variables['params'], variables['batch_stats'], batch)

  def temp_bytes(fn, *args):
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  def ce(params, stats, batch):
    return jax.grad(lambda p: loss_fn(p, stats, batch)[0].mean())(params)

  def meta(params, stats, batch, dev):
    w = jnp.ones(64)
    return ltjax.meta_step(loss_fn, params, stats, batch, dev, w, inner_lr=0.1)

  ratio = temp_bytes(meta, *args, batch) / temp_bytes(ce, *args)
  assert ratio < 1.5, ratio


def test_after_is_the_identity():
  from ltjax.meta import _after

  tree = {'a': jnp.arange(5.0), 'b': jnp.ones((2, 3), jnp.bfloat16)}
  deps = {'g': jnp.array([2.0, 3.0]), 'h': jnp.int32(4), 'e': jnp.zeros(0)}
  out = jax.jit(_after)(tree, deps)
  for x, y in zip(jax.tree.leaves(out), jax.tree.leaves(tree), strict=True):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(np.asarray(x, np.float32), y)
  bad = jax.jit(_after)(tree, {'g': jnp.array([jnp.inf, 0.0])})
  assert jnp.isnan(bad['a']).all()
  np.testing.assert_array_equal(_after(tree, {})['a'], tree['a'])
