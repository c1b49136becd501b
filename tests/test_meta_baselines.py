"""L2RW and Meta-Weight-Net against plain jax.grad through the unrolled step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ltjax
from ltjax import meta_baselines


def loss_fn(params, state, batch):
  hidden = jnp.tanh(batch['x'] @ params['w1'])
  logits = hidden @ params['w2']
  return ltjax.softmax_cross_entropy(logits, batch['y']), state


def problem(seed=0, n=12, d=5, k=3):
  ks = jax.random.split(jax.random.key(seed), 4)
  params = {
    'w1': jax.random.normal(ks[0], (d, 7), jnp.float64) * 0.5,
    'w2': jax.random.normal(ks[1], (7, k), jnp.float64) * 0.5,
  }
  batch = {
    'x': jax.random.normal(ks[2], (n, d), jnp.float64),
    'y': jnp.arange(n) % k,
  }
  dev = {
    'x': jax.random.normal(ks[3], (9, d), jnp.float64),
    'y': jnp.arange(9) % k,
  }
  return params, batch, dev


def sgd(params, grads, lr):
  return jax.tree.map(lambda p, g: p - lr * g, params, grads)


def dev_loss(params, dev):
  return loss_fn(params, None, dev)[0].mean()


@pytest.mark.parametrize('eps_grad', ['jvp', 'unroll'])
def test_l2rw_matches_direct_definition(eps_grad):
  with jax.enable_x64(True):
    params, batch, dev = problem()
    lr = 0.3

    def dev_of_eps(eps):
      def inner(p):
        return jnp.sum(eps * loss_fn(p, None, batch)[0])

      return dev_loss(sgd(params, jax.grad(inner)(params), lr), dev)

    g = jax.grad(dev_of_eps)(jnp.zeros(12))
    w = jnp.maximum(-g, 0)
    w = w / w.sum()
    assert int((w > 0).sum()) not in (0, 12)  # some clipped, some kept
    grads = jax.grad(lambda p: jnp.sum(w * loss_fn(p, None, batch)[0]))(params)

    out = meta_baselines.l2rw_step(
      loss_fn, params, None, batch, dev, inner_lr=lr, eps_grad=eps_grad
    )
    np.testing.assert_allclose(out.weights / 12, w, rtol=1e-10, atol=1e-14)
    for a, b in zip(
      jax.tree.leaves(out.grads), jax.tree.leaves(grads), strict=True
    ):
      np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(
      out.train_loss, jnp.sum(w * out.losses), rtol=1e-12
    )


@pytest.mark.parametrize('eps_grad', ['jvp', 'unroll'])
def test_mwn_matches_direct_definition(eps_grad):
  with jax.enable_x64(True):
    params, batch, dev = problem(1)
    lr = 0.5
    vnet = meta_baselines.MetaWeightNet(hidden=8)
    phi = vnet.init(jax.random.key(5), jnp.ones(12))['params']
    phi = jax.tree.map(lambda x: x.astype(jnp.float64), phi)
    opt = meta_baselines.mwn_optimizer(learning_rate=0.1)
    opt_state = opt.init(phi)

    def V(phi, losses):  # noqa: N802 (the paper's name)
      return vnet.apply({'params': phi}, losses)

    def dev_of_phi(phi):
      def inner(p):
        losses = loss_fn(p, None, batch)[0]
        return jnp.mean(V(phi, jax.lax.stop_gradient(losses)) * losses)

      return dev_loss(sgd(params, jax.grad(inner)(params), lr), dev)

    phi_grads = jax.grad(dev_of_phi)(phi)
    updates, _ = opt.update(phi_grads, opt.init(phi), phi)
    phi_new = optax.apply_updates(phi, updates)
    losses = loss_fn(params, None, batch)[0]
    w_new = V(phi_new, losses)
    grads = jax.grad(lambda p: jnp.mean(w_new * loss_fn(p, None, batch)[0]))(
      params
    )

    out, phi_out, _ = meta_baselines.mwn_step(
      loss_fn, params, None, batch, dev, vnet, phi, opt_state, opt,
      inner_lr=lr, eps_grad=eps_grad,
    )  # fmt: skip
    for a, b in zip(
      jax.tree.leaves(phi_out), jax.tree.leaves(phi_new), strict=True
    ):
      np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert not np.allclose(w_new, V(phi, losses))  # φ actually moved
    np.testing.assert_allclose(out.weights, w_new, rtol=1e-9)
    for a, b in zip(
      jax.tree.leaves(out.grads), jax.tree.leaves(grads), strict=True
    ):
      np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-13)
