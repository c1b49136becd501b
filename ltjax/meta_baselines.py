"""Meta-reweighting baselines on the same unrolled step: L2RW and MW-Net.

Both reuse :func:`ltjax.meta.unrolled_eps_grad`, the machinery of
:func:`ltjax.meta_step`; they differ only in how the dev-loss gradient
``g = ∂L_D(θ̃(ε))/∂ε`` becomes per-example weights.

- L2RW (Ren et al., ICML 2018): inner loss ``Σ_i ε_i ℓ_i`` at ``ε = 0``
  (no class weights, so ``θ̃ = θ``); weights ``max(-g, 0)`` normalized to sum
  to one; the final loss is ``Σ_i w_i ℓ_i``.
- Meta-Weight-Net (Shu et al., NeurIPS 2019): weights ``V(ℓ_i; φ)`` from a
  one-hidden-layer MLP of the (detached) loss; inner loss
  ``mean_i V(ℓ_i; φ) ℓ_i``; ``φ`` takes one optimizer step on
  ``∂L_D/∂φ = Σ_i g_i ∂V(ℓ_i; φ)/∂φ`` (chain rule through the weights), then
  the final loss is ``mean_i V(ℓ_i; φ') ℓ_i`` with the updated ``φ'``.

Both functions return :class:`ltjax.MetaStepOutput` with ``weights`` on the
``mean`` scale: ``train_loss = mean_i weights_i ℓ_i`` (for L2RW the weights
are ``|B|`` times the normalized ones, so they average to one).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from ltjax.meta import LossFn, MetaStepOutput, unrolled_eps_grad


@functools.partial(
  jax.jit, static_argnames=('loss_fn', 'dev_loss_fn', 'eps_grad')
)
def l2rw_step(
  loss_fn: LossFn,
  params,
  model_state,
  batch,
  dev_batch,
  *,
  inner_lr,
  eps_grad: str = 'jvp',
  dev_loss_fn: LossFn | None = None,
) -> MetaStepOutput:
  """One step of Learning to Reweight (Ren et al., 2018).

  Arguments as :func:`ltjax.meta_step` (no class weights: L2RW uses none).
  """
  out = unrolled_eps_grad(
    loss_fn,
    params,
    model_state,
    batch,
    dev_batch,
    lambda losses: jnp.zeros_like(losses),
    inner_lr=inner_lr,
    reduction='sum',
    eps_grad=eps_grad,
    dev_loss_fn=dev_loss_fn,
  )
  raw = jax.lax.stop_gradient(jnp.maximum(-out.grad_eps, 0.0))
  total = jnp.sum(raw)
  # All-zero weights (every example hurts the dev loss) skip the update.
  normalized = jnp.where(total > 0, raw / jnp.where(total > 0, total, 1), 0)
  weights = normalized * raw.shape[0]
  train_loss, losses, new_state, grads = out.finish(weights)
  return MetaStepOutput(
    grads=grads,
    model_state=new_state,
    eps=weights,
    weights=weights,
    dev_loss=out.dev_loss,
    train_loss=train_loss,
    losses=losses,
  )


class MetaWeightNet(nn.Module):
  """``V(ℓ; φ)``: loss ``[batch]`` -> weight in ``(0, 1)`` ``[batch]``.

  One hidden ReLU layer of ``hidden`` units and a sigmoid output, as in Shu
  et al. (100 hidden units).
  """

  hidden: int = 100

  @nn.compact
  def __call__(self, losses: jax.Array) -> jax.Array:
    x = nn.relu(nn.Dense(self.hidden)(losses[:, None]))
    return nn.sigmoid(nn.Dense(1)(x))[:, 0]


def mwn_optimizer(learning_rate=1e-3, weight_decay=1e-4):
  """The official MW-Net meta optimizer: Adam with L2 weight decay."""
  return optax.chain(
    optax.add_decayed_weights(weight_decay), optax.adam(learning_rate)
  )


@functools.partial(
  jax.jit,
  static_argnames=(
    'loss_fn',
    'vnet',
    'vnet_optimizer',
    'dev_loss_fn',
    'eps_grad',
  ),
)
def mwn_step(
  loss_fn: LossFn,
  params,
  model_state,
  batch,
  dev_batch,
  vnet: MetaWeightNet,
  vnet_params,
  vnet_opt_state,
  vnet_optimizer: optax.GradientTransformation,
  *,
  inner_lr,
  eps_grad: str = 'jvp',
  dev_loss_fn: LossFn | None = None,
):
  """One Meta-Weight-Net step (Shu et al., 2019).

  Args:
    loss_fn, params, model_state, batch, dev_batch, inner_lr, eps_grad,
      dev_loss_fn: as :func:`ltjax.meta_step`.
    vnet: the weighting network module (static).
    vnet_params: its parameters ``φ``.
    vnet_opt_state: state of ``vnet_optimizer`` for ``φ``.
    vnet_optimizer: the meta optimizer (static), e.g. :func:`mwn_optimizer`.

  Returns:
    ``(MetaStepOutput, new_vnet_params, new_vnet_opt_state)``.
  """

  def vnet_weights(phi, losses):
    return vnet.apply({'params': phi}, losses)

  out = unrolled_eps_grad(
    loss_fn,
    params,
    model_state,
    batch,
    dev_batch,
    functools.partial(vnet_weights, vnet_params),
    inner_lr=inner_lr,
    reduction='mean',
    eps_grad=eps_grad,
    dev_loss_fn=dev_loss_fn,
  )
  _, pullback = jax.vjp(lambda phi: vnet_weights(phi, out.losses), vnet_params)
  (phi_grads,) = pullback(out.grad_eps.astype(out.weights.dtype))
  updates, vnet_opt_state = vnet_optimizer.update(
    phi_grads, vnet_opt_state, vnet_params
  )
  vnet_params = optax.apply_updates(vnet_params, updates)
  weights = jax.lax.stop_gradient(vnet_weights(vnet_params, out.losses))
  train_loss, losses, new_state, grads = out.finish(weights - out.weights)
  result = MetaStepOutput(
    grads=grads,
    model_state=new_state,
    eps=weights - out.weights,
    weights=weights,
    dev_loss=out.dev_loss,
    train_loss=train_loss,
    losses=losses,
  )
  return result, vnet_params, vnet_opt_state
