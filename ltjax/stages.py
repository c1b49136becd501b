"""What a training stage computes: its gradients, and its start.

Each stage of :data:`ltjax.methods.STAGES` names one gradient function
here, ``make(loss_fn, class_w, config) -> grad_fn``, where
``grad_fn(state, batch, dev_batch, lr) -> StageOutput`` and ``class_w`` is
the ``[C]`` class weights the stage declares. :func:`ltjax.train_step.apply_gradients`
then takes one shared optimizer step (optax ``chain`` style).

Stages that train a part of the model (cRT's classifier, LWS's per-class
logit scales) start with :func:`enter_stage`, which re-initializes or adds
those parameters and starts their optimizer afresh.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from ltjax import meta, meta_baselines

# The classifier's name in the models' parameters: the official CIFAR
# ResNet's ``linear`` and torchvision's ``fc``.
CLASSIFIER_NAMES = ('linear', 'fc', 'head')
CLASS_SCALE = 'class_scale'  # LWS's [C] scales (ltjax.models.scaled_logits)


class StageOutput(NamedTuple):
  """What a stage's gradient function gives ``apply_gradients``.

  ``extra``: the other ``TrainState`` fields the stage updates.
  """

  grads: dict
  batch_stats: dict
  train_loss: jax.Array
  extra: dict


def _accumulate(stats, labels, eps, weights):
  rows = jnp.stack(
    [jnp.ones_like(eps), eps, eps**2, weights, weights**2], axis=1
  ).astype(stats.dtype)
  return stats.at[labels].add(rows)


def _meta_output(state, labels, out: meta.MetaStepOutput, **extra):
  stats = _accumulate(state.weight_stats, labels, out.eps, out.weights)
  return StageOutput(
    out.grads, out.model_state, out.train_loss, dict(extra, weight_stats=stats)
  )


def weighted_grads(loss_fn, class_w, config):
  """Stages ``plain`` (``class_w`` ones) and ``cb``: the weighted mean loss."""
  del config

  def grad_fn(state, batch, dev_batch, lr):
    del dev_batch, lr

    def loss(params):
      per_ex, new_stats = loss_fn(params, state.batch_stats, batch)
      return jnp.mean(class_w[batch['label']] * per_ex), new_stats

    (train_loss, new_stats), grads = jax.value_and_grad(loss, has_aux=True)(
      state.params
    )
    return StageOutput(grads, new_stats, train_loss, {})

  return grad_fn


def ours_grads(loss_fn, class_w, config):
  """Stage ``ours``: :func:`ltjax.meta_step`, ε meta-learned on the dev batch."""

  def grad_fn(state, batch, dev_batch, lr):
    labels = batch['label']
    out = meta.meta_step(
      loss_fn,
      state.params,
      state.batch_stats,
      batch,
      dev_batch,
      class_w[labels],
      inner_lr=lr,
      eps_grad=config.eps_grad,
      eps_lr=config.eps_lr,
      reduction=config.inner_reduction,
    )
    return _meta_output(state, labels, out)

  return grad_fn


def l2rw_grads(loss_fn, class_w, config):
  """Stage ``l2rw``: Learning to Reweight (no class weights)."""
  del class_w

  def grad_fn(state, batch, dev_batch, lr):
    out = meta_baselines.l2rw_step(
      loss_fn,
      state.params,
      state.batch_stats,
      batch,
      dev_batch,
      inner_lr=lr,
      eps_grad=config.eps_grad,
    )
    return _meta_output(state, batch['label'], out)

  return grad_fn


def mwn_grads(loss_fn, class_w, config):
  """Stage ``mwn``: Meta-Weight-Net, which also steps its own ``φ``."""
  del class_w
  vnet = meta_baselines.MetaWeightNet(config.mwn_hidden)
  vnet_optimizer = meta_baselines.mwn_optimizer(config.mwn_lr, config.mwn_wd)

  def grad_fn(state, batch, dev_batch, lr):
    out, vnet_params, vnet_opt_state = meta_baselines.mwn_step(
      loss_fn,
      state.params,
      state.batch_stats,
      batch,
      dev_batch,
      vnet,
      state.vnet_params,
      state.vnet_opt_state,
      vnet_optimizer,
      inner_lr=lr,
      eps_grad=config.eps_grad,
    )
    return _meta_output(
      state,
      batch['label'],
      out,
      vnet_params=vnet_params,
      vnet_opt_state=vnet_opt_state,
    )

  return grad_fn


def mwn_init(config, key) -> dict:
  """Meta-Weight-Net's ``φ`` and its optimizer state (``TrainState`` fields)."""
  vnet = meta_baselines.MetaWeightNet(config.mwn_hidden)
  vnet_params = vnet.init(key, jnp.zeros((1,)))['params']
  opt = meta_baselines.mwn_optimizer(config.mwn_lr, config.mwn_wd)
  return {'vnet_params': vnet_params, 'vnet_opt_state': opt.init(vnet_params)}


# --- Stages that train one part of the model --------------------------------


def classifier_name(params) -> str:
  """The key of the classifier in ``params`` (one of
  :data:`CLASSIFIER_NAMES`)."""
  found = [k for k in CLASSIFIER_NAMES if k in params]
  if len(found) != 1:
    raise ValueError(
      f'cannot tell the classifier among the parameters {sorted(params)}: '
      f'a stage that retrains it needs exactly one of {CLASSIFIER_NAMES}.'
    )
  return found[0]


def trained_part(params, trains: str) -> str:
  """The top-level key of ``params`` that a stage training ``trains``
  (``'classifier'`` or ``'class_scale'``) updates."""
  return classifier_name(params) if trains == 'classifier' else CLASS_SCALE


def part_grads(loss_fn, class_w, config, *, trains: str):
  """Stages ``crt`` and ``lws``: the weighted mean loss, differentiated with
  respect to one part of the parameters (:func:`trained_part`) only.

  ``loss_fn`` runs the model in evaluation mode (a frozen backbone: the
  BatchNorm statistics stay as they are); the other parameters get zero
  gradients, and ``apply_gradients`` leaves them bit-identical.
  """
  del config

  def grad_fn(state, batch, dev_batch, lr):
    del dev_batch, lr
    key = trained_part(state.params, trains)

    def loss(part):
      params = {**state.params, key: part}
      per_ex, _ = loss_fn(params, state.batch_stats, batch)
      return jnp.mean(class_w[batch['label']] * per_ex)

    train_loss, grad = jax.value_and_grad(loss)(state.params[key])
    grads = {**jax.tree.map(jnp.zeros_like, state.params), key: grad}
    return StageOutput(grads, state.batch_stats, train_loss, {})

  return grad_fn


def trainable_mask(params, trains: str):
  """``params``-shaped booleans: which leaves a stage training ``trains``
  (``'all'``, ``'classifier'`` or ``'class_scale'``) may change."""
  if trains == 'all':
    return jax.tree.map(lambda _: True, params)
  key = trained_part(params, trains)
  return {
    k: jax.tree.map(lambda _, k=k: k == key, v) for k, v in params.items()
  }


def enter_stage(state, *, trains, reinit_classifier, fresh_params, optimizer):
  """The state at the start of a stage that trains one part of the model.

  ``reinit_classifier``: the classifier takes its values from
  ``fresh_params`` (a new initialization, as cRT). ``trains ==
  'class_scale'``: ``[C]`` logit scales of one are added (LWS). The
  optimizer state starts afresh (no momentum carried over from the other
  stage), its step count kept so the learning-rate schedule goes on.
  """
  params = dict(state.params)
  head = classifier_name(params)
  if reinit_classifier:
    params[head] = fresh_params[head]
  if trains == CLASS_SCALE:
    num_classes = jax.tree.leaves(params[head])[0].shape[-1]
    params[CLASS_SCALE] = jnp.ones((num_classes,), jnp.float32)
  opt_state = optax.tree_utils.tree_set(
    optimizer.init(params), count=state.step
  )
  return state.replace(params=params, opt_state=opt_state)
