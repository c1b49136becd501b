"""The meta step: conditional weights ε learned through one unrolled SGD step.

Jamal et al. (CVPR 2020), Algorithm 1. For a training batch ``B`` with
class-balanced weights ``w_i = w_{y_i}`` and per-example losses ``ℓ_i(θ)``:

1. ``ε = 0``.
2. ``L_B(θ, ε) = c Σ_i (w_i + ε_i) ℓ_i(θ)``, ``c = 1`` (``reduction='sum'``,
   the official code) or ``c = 1/|B|`` (``'mean'``, the paper).
3. ``θ̃(ε) = θ - η ∇_θ L_B(θ, ε)``.
4. ``L_D(θ̃) = mean_j ℓ^D_j(θ̃)`` on a dev batch.
5. ``ε = -τ ∇_ε L_D(θ̃(ε))`` at ``ε = 0``; no clipping or normalization.
6. ``L = mean_i (w_i + ε_i) ℓ_i(θ)`` with ``ε`` constant; its gradient is what
   the outer optimizer applies.

Step 5's gradient is ``∂L_D/∂ε_i = -c η ⟨∇_θ ℓ_i(θ), ∇_θ̃ L_D(θ̃)⟩``: ``-c η``
times the Jacobian-vector product of the per-example losses along the dev
gradient. The default ``eps_grad='jvp'`` computes exactly that in forward
mode, from a linearization of the training pass that also gives the final
gradient (step 6) by transposition; it recomputes the training forward pass
after the dev pass rather than hold its activations through it.
``eps_grad='unroll'`` takes ``jax.grad`` through the unrolled step instead (a
second-order reverse pass, as the official PyTorch code); both give the same
numbers.

BatchNorm: the model state returned is the one from the forward pass at ``θ``
on the training batch (step 6); the passes at ``θ̃`` are discarded.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Params = Any
ModelState = Any
Batch = Any
# loss_fn(params, model_state, batch) -> (per-example losses [batch], new state)
LossFn = Callable[[Params, ModelState, Batch], tuple[jax.Array, ModelState]]

REDUCTIONS = ('sum', 'mean')
EPS_GRAD_METHODS = ('jvp', 'unroll')


class MetaStepOutput(NamedTuple):
  """What :func:`meta_step` returns.

  Attributes:
    grads: gradient of the final weighted loss ``mean_i (w_i + ε_i) ℓ_i(θ)``
      with respect to ``params`` (same structure); feed it to any optax
      optimizer.
    model_state: the model state after the final forward pass (e.g. updated
      BatchNorm running statistics).
    eps: ``[batch]`` conditional weights ``ε = -τ ∇_ε L_D``.
    weights: ``[batch]`` final per-example weights ``w + ε`` (may be negative).
    dev_loss: scalar ``L_D(θ̃)``, the dev loss after the unrolled step.
    train_loss: scalar final weighted loss ``mean_i (w_i + ε_i) ℓ_i(θ)``.
    losses: ``[batch]`` unweighted per-example training losses ``ℓ_i(θ)``.
  """

  grads: Params
  model_state: ModelState
  eps: jax.Array
  weights: jax.Array
  dev_loss: jax.Array
  train_loss: jax.Array
  losses: jax.Array


class Unrolled(NamedTuple):
  """What :func:`unrolled_eps_grad` returns.

  Attributes:
    dev_loss: scalar ``L_D(θ̃)`` at ``ε = 0``.
    grad_eps: ``[batch]`` ``∂L_D/∂ε`` at ``ε = 0``.
    losses: ``[batch]`` per-example training losses ``ℓ_i(θ)``.
    weights: ``[batch]`` the weights ``w`` of the inner loss.
    finish: ``finish(eps) -> (loss, losses, new_model_state, grads)``, the
      final loss ``mean_i (w_i + eps_i) ℓ_i(θ)`` (``eps`` held constant) and
      its gradient in ``θ``, reusing the training forward pass where it can.
  """

  dev_loss: jax.Array
  grad_eps: jax.Array
  losses: jax.Array
  weights: jax.Array
  finish: Callable


def _check_options(reduction: str, eps_grad: str) -> None:
  if reduction not in REDUCTIONS:
    raise ValueError(
      f"reduction must be one of {REDUCTIONS}, got {reduction!r}: 'sum' as "
      "the official code, 'mean' as the paper."
    )
  if eps_grad not in EPS_GRAD_METHODS:
    raise ValueError(
      f'eps_grad must be one of {EPS_GRAD_METHODS}, got {eps_grad!r}.'
    )


def _check_losses(losses: jax.Array, base_weights: jax.Array) -> None:
  if losses.ndim != 1:
    raise ValueError(
      'loss_fn must return per-example losses of shape [batch] (no reduction)'
      f', got shape {losses.shape}.'
    )
  if base_weights.shape != losses.shape:
    raise ValueError(
      f'base_weights has shape {base_weights.shape} but loss_fn returned '
      f'{losses.shape[0]} per-example losses; pass one weight per training '
      'example, e.g. class_weights[labels].'
    )


def _sgd_step(params: Params, grads: Params, lr: jax.Array) -> Params:
  return jax.tree.map(lambda p, g: p - lr.astype(p.dtype) * g, params, grads)


def _after(tree: Any, deps: Any) -> Any:
  """``tree`` unchanged, as values XLA can compute only once ``deps`` exist.

  Divides by a one computed from one element of every leaf of ``deps``
  (``1 + 0 * x`` is not folded for floats, and ``a / 1`` is exact). XLA:CPU
  drops ``lax.optimization_barrier`` before scheduling, so it cannot do this.
  A non-finite ``deps`` makes the result NaN, as it would the meta step's
  result anyway.
  """
  leaves = [x for x in jax.tree.leaves(deps) if jnp.size(x)]
  firsts = sum(jnp.ravel(x)[0].astype(jnp.float32) for x in leaves)
  one = jnp.float32(1.0) + 0.0 * firsts
  return jax.tree.map(lambda x: x / one.astype(x.dtype), tree)


def _dev_loss(dev_loss_fn: LossFn, params, model_state, dev_batch) -> jax.Array:
  losses, _ = dev_loss_fn(params, model_state, dev_batch)
  return losses.mean()


def _meta_step_unroll(
  loss_fn, dev_loss_fn, params, model_state, batch, dev_batch, w, inner_lr, c
):
  """Plain form: jax.grad of the dev loss through the unrolled inner step."""
  losses, _ = loss_fn(params, model_state, batch)
  w = w(jax.lax.stop_gradient(losses))

  def dev_loss_of_eps(eps):
    def inner_loss(p):
      losses, _ = loss_fn(p, model_state, batch)
      return c * jnp.sum((w + eps) * losses)

    params_tilde = _sgd_step(params, jax.grad(inner_loss)(params), inner_lr)
    return _dev_loss(dev_loss_fn, params_tilde, model_state, dev_batch)

  dev_loss, grad_eps = jax.value_and_grad(dev_loss_of_eps)(jnp.zeros_like(w))

  def finish(eps):
    def final_loss(p):
      losses, new_state = loss_fn(p, model_state, batch)
      return jnp.mean((w + eps) * losses), (losses, new_state)

    (train_loss, (losses, new_state)), grads = jax.value_and_grad(
      final_loss, has_aux=True
    )(params)
    return train_loss, losses, new_state, grads

  return Unrolled(dev_loss, grad_eps, losses, w, finish)


def _meta_step_jvp(
  loss_fn, dev_loss_fn, params, model_state, batch, dev_batch, w, inner_lr, c
):
  """Fast form: forward mode for ε, and no activations held across passes.

  The training pass is differentiated twice: in reverse before the dev pass
  (the inner gradient, step 3) and linearized after it (the ε gradient, step
  5, and the final gradient, step 6, by transposition). Keeping one
  linearization for both would hold the training batch's activations alive
  through the dev forward and backward passes, which more than doubles the
  peak memory of a cross-entropy step; recomputing the forward pass costs
  less than a tenth of the meta step. :func:`_after` orders the second pass
  after the dev gradient so that XLA neither merges the two passes nor
  schedules the second early.
  """

  def train(p):
    return loss_fn(p, model_state, batch)

  losses, inner_vjp, _ = jax.vjp(train, params, has_aux=True)
  w = w(jax.lax.stop_gradient(losses))
  params_tilde = _sgd_step(params, inner_vjp(c * w)[0], inner_lr)
  dev_loss, dev_grads = jax.value_and_grad(
    functools.partial(_dev_loss, dev_loss_fn)
  )(params_tilde, model_state, dev_batch)

  params = _after(params, dev_grads)
  losses, losses_jvp, new_state = jax.linearize(train, params, has_aux=True)
  grad_eps = -c * inner_lr * losses_jvp(dev_grads)

  def finish(eps):
    weights = w + eps
    losses_vjp = jax.linear_transpose(losses_jvp, params)
    grads = losses_vjp(weights / losses.shape[0])[0]
    return jnp.mean(weights * losses), losses, new_state, grads

  return Unrolled(dev_loss, grad_eps, losses, w, finish)


def unrolled_eps_grad(
  loss_fn: LossFn,
  params: Params,
  model_state: ModelState,
  batch: Batch,
  dev_batch: Batch,
  weight_fn: Callable[[jax.Array], jax.Array],
  *,
  inner_lr: jax.Array,
  reduction: str = 'sum',
  eps_grad: str = 'jvp',
  dev_loss_fn: LossFn | None = None,
):
  """The machinery shared by the meta-reweighting methods (not jitted).

  With per-example weights ``w = weight_fn(stop_gradient(ℓ(θ)))``, computes
  ``L_D(θ̃(ε))`` for ``θ̃(ε) = θ - η ∇_θ c Σ_i (w_i + ε_i) ℓ_i(θ)`` and its
  gradient in ``ε`` at ``ε = 0``. :func:`meta_step` (``w`` = class weights),
  L2RW (``w = 0``) and Meta-Weight-Net (``w = V(ℓ; φ)``, whose ``φ``
  gradient is the VJP of ``V`` with this ``ε`` gradient) all build on it.

  Returns:
    An :class:`Unrolled`.
  """
  _check_options(reduction, eps_grad)
  dev_loss_fn = loss_fn if dev_loss_fn is None else dev_loss_fn
  losses_shape = jax.eval_shape(loss_fn, params, model_state, batch)[0]
  dtype = losses_shape.dtype
  c = 1.0 if reduction == 'sum' else 1.0 / losses_shape.shape[0]

  def weights(losses):
    w = jnp.asarray(weight_fn(losses))
    _check_losses(losses_shape, w)
    return w.astype(dtype)

  form = _meta_step_jvp if eps_grad == 'jvp' else _meta_step_unroll
  return form(
    loss_fn,
    dev_loss_fn,
    params,
    model_state,
    batch,
    dev_batch,
    weights,
    jnp.asarray(inner_lr, dtype),
    c,
  )


@functools.partial(
  jax.jit,
  static_argnames=('loss_fn', 'dev_loss_fn', 'reduction', 'eps_grad'),
)
def meta_step(
  loss_fn: LossFn,
  params: Params,
  model_state: ModelState,
  batch: Batch,
  dev_batch: Batch,
  base_weights: jax.Array,
  *,
  inner_lr: float | jax.Array,
  eps_lr: float | jax.Array = 0.01,
  reduction: str = 'sum',
  eps_grad: str = 'jvp',
  dev_loss_fn: LossFn | None = None,
) -> MetaStepOutput:
  """One meta step of Jamal et al. (CVPR 2020): learns ε, returns gradients.

  Implements steps 1-6 of the module docstring for any model: ``loss_fn``
  maps ``(params, model_state, batch)`` to ``[batch]`` per-example losses
  (training-mode forward pass) and the updated model state. Use ``{}`` or
  ``None`` as ``model_state`` for models without one.

  The function is jitted (``loss_fn``, ``dev_loss_fn``, ``reduction`` and
  ``eps_grad`` are static: create ``loss_fn`` once, not per step) and may be
  called inside a larger jitted train step; ``inner_lr`` and ``eps_lr`` are
  traced, so a learning-rate schedule does not retrace.

  Args:
    loss_fn: per-example training loss, as above.
    params: model parameters ``θ`` (a pytree of float arrays).
    model_state: non-trainable state threaded through ``loss_fn``.
    batch: training batch, passed to ``loss_fn`` untouched.
    dev_batch: a batch of the balanced development set.
    base_weights: ``[batch]`` class-balanced weights ``w_{y_i}`` of the
      training examples (``class_weights[labels]``; ones for plain CE).
    inner_lr: ``η``, the step size of the unrolled SGD step (the current
      learning rate in the official code).
    eps_lr: ``τ``, the step size on ε (0.01 in the official code).
    reduction: inner loss ``'sum'`` over the batch (official code) or
      ``'mean'`` (paper; equals ``'sum'`` with ``η / |B|``).
    eps_grad: ``'jvp'`` (default, fast) or ``'unroll'`` (``jax.grad``
      through the unrolled step); equal up to rounding.
    dev_loss_fn: per-example loss on the dev batch; defaults to ``loss_fn``.
      Its model state output is discarded.

  Returns:
    A :class:`MetaStepOutput`.

  Example:
    >>> import jax, jax.numpy as jnp, optax, ltjax
    >>> def loss_fn(params, state, batch):  # linear softmax regression
    ...   logits = batch['x'] @ params['w']
    ...   return ltjax.softmax_cross_entropy(logits, batch['y']), state
    >>> kx, kd = jax.random.split(jax.random.key(0))
    >>> batch = {'x': jax.random.normal(kx, (8, 5)), 'y': jnp.arange(8) % 3}
    >>> dev = {'x': jax.random.normal(kd, (6, 5)), 'y': jnp.arange(6) % 3}
    >>> params = {'w': jnp.zeros((5, 3))}
    >>> w = jnp.asarray(ltjax.class_balanced_weights([5, 2, 1]))[batch['y']]
    >>> out = ltjax.meta_step(loss_fn, params, {}, batch, dev, w, inner_lr=0.1)
    >>> out.eps.shape, out.weights.shape, out.grads['w'].shape
    ((8,), (8,), (5, 3))
    >>> bool(jnp.allclose(out.weights, w + out.eps))
    True
    >>> opt = optax.sgd(0.1)
    >>> updates, _ = opt.update(out.grads, opt.init(params))
    >>> params = optax.apply_updates(params, updates)
  """
  base_weights = jnp.asarray(base_weights)
  dev_loss, grad_eps, _, w, finish = unrolled_eps_grad(
    loss_fn,
    params,
    model_state,
    batch,
    dev_batch,
    lambda _: base_weights,
    inner_lr=inner_lr,
    reduction=reduction,
    eps_grad=eps_grad,
    dev_loss_fn=dev_loss_fn,
  )
  eps = jax.lax.stop_gradient(-jnp.asarray(eps_lr, w.dtype) * grad_eps)
  train_loss, losses, new_state, grads = finish(eps)
  return MetaStepOutput(
    grads=grads,
    model_state=new_state,
    eps=eps,
    weights=w + eps,
    dev_loss=dev_loss,
    train_loss=train_loss,
    losses=losses,
  )
