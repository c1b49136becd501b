"""The methods of the paper's tables and their jitted update steps.

A method is a per-example loss plus what each training stage does: stage 1
(epochs before ``stage2_epoch``, "t1") and stage 2 (the rest, "t2") each run
one of

- ``'plain'``: unweighted mean loss;
- ``'cb'``: class-balanced weights ``w_y`` (Cui et al.);
- ``'ours'``: class weights plus meta-learned conditional weights
  (:func:`ltjax.meta_step`, Jamal et al.);
- ``'l2rw'``: Learning to Reweight (:func:`ltjax.reweighting.l2rw_step`);
- ``'mwn'``: Meta-Weight-Net (:func:`ltjax.reweighting.mwn_step`).
"""

from __future__ import annotations

import dataclasses
import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ltjax import losses as losses_lib
from ltjax import meta, reweighting, weighting
from ltjax.models.functional import make_loss_fn

STAGES = ('plain', 'cb', 'ours', 'l2rw', 'mwn')
META_STAGES = ('ours', 'l2rw', 'mwn')


@dataclasses.dataclass(frozen=True)
class Method:
  loss: str  # 'ce', 'focal' or 'ldam'
  stage1: str
  stage2: str

  @property
  def uses_meta(self) -> bool:
    return self.stage1 in META_STAGES or self.stage2 in META_STAGES


METHODS = {
  'ce': Method('ce', 'plain', 'plain'),
  'cb_ce': Method('ce', 'cb', 'cb'),
  'focal': Method('focal', 'plain', 'plain'),
  'cb_focal': Method('focal', 'cb', 'cb'),
  'ldam': Method('ldam', 'plain', 'plain'),
  'ldam_drw': Method('ldam', 'plain', 'cb'),
  'cb_finetune': Method('ce', 'plain', 'cb'),
  'l2rw': Method('ce', 'l2rw', 'l2rw'),
  'mwn': Method('ce', 'mwn', 'mwn'),
  'ours_ce': Method('ce', 'plain', 'ours'),
  'ours_focal': Method('focal', 'plain', 'ours'),
  'ours_ldam': Method('ldam', 'plain', 'ours'),
}


def get_method(name: str) -> Method:
  if name not in METHODS:
    raise ValueError(
      f'unknown method {name!r} (config.method); choose one of '
      f'{sorted(METHODS)}.'
    )
  return METHODS[name]


class TrainState(flax.struct.PyTreeNode):
  """Everything a run carries from step to step (and checkpoints).

  Attributes:
    step: number of updates done.
    params, batch_stats, opt_state: the model and its optimizer.
    vnet_params, vnet_opt_state: Meta-Weight-Net's ``φ`` and its optimizer
      (empty dicts for other methods).
    weight_stats: ``[C, 5]`` per-class sums over the meta stage: count,
      ``Σε``, ``Σε²``, ``Σ(w+ε)``, ``Σ(w+ε)²``.
    first_bad_step: the first step whose loss or updated parameters were
      not finite, or -1.
  """

  step: jax.Array
  params: dict
  batch_stats: dict
  opt_state: optax.OptState
  vnet_params: dict
  vnet_opt_state: optax.OptState
  weight_stats: jax.Array
  first_bad_step: jax.Array


def per_example_loss(method: Method, config, class_counts):
  """The per-example loss ``(logits, labels) -> [batch]`` of ``method``.

  Logits are cast to float32 first, so losses (and the meta step's ε) stay
  float32 when the model computes in bfloat16.
  """
  if method.loss == 'ce':
    loss = losses_lib.softmax_cross_entropy
  elif method.loss == 'focal':
    loss = functools.partial(losses_lib.focal_loss, gamma=config.focal_gamma)
  else:
    margins = losses_lib.ldam_margins(class_counts, config.ldam_max_margin)
    loss = functools.partial(
      losses_lib.ldam_loss, margins=margins, scale=config.ldam_scale
    )

  def f32_loss(logits, labels):
    return loss(logits.astype(jnp.float32), labels)

  return f32_loss


def learning_rate_fn(config, steps_per_epoch: int):
  """``lr(step)``: step decays at ``config.lr_boundaries`` (epochs), with an
  optional linear warm-up over ``config.warmup_epochs`` (LDAM-DRW uses 5)."""
  boundaries = jnp.asarray(list(config.lr_boundaries), jnp.float32)

  def lr(step):
    epoch = step // steps_per_epoch
    passed = jnp.sum(epoch >= boundaries)
    value = config.learning_rate * config.lr_decay**passed
    if config.warmup_epochs:
      warm = (epoch + 1) / config.warmup_epochs
      value = value * jnp.minimum(warm, 1.0)
    return value

  return lr


def make_optimizer(config, lr_fn) -> optax.GradientTransformation:
  """SGD with (Nesterov) momentum and PyTorch-style coupled weight decay."""
  return optax.chain(
    optax.add_decayed_weights(config.weight_decay),
    optax.sgd(lr_fn, momentum=config.momentum, nesterov=config.nesterov),
  )


def _accumulate(stats, labels, eps, weights):
  rows = jnp.stack(
    [jnp.ones_like(eps), eps, eps**2, weights, weights**2], axis=1
  ).astype(stats.dtype)
  return stats.at[labels].add(rows)


def make_update_fn(
  stage: str, model, method: Method, config, class_counts, steps_per_epoch
):
  """``update(state, batch, dev_batch) -> (state, metrics)`` for one stage.

  Pure and jittable; ``dev_batch`` is ignored by the non-meta stages.
  """
  if stage not in STAGES:
    raise ValueError(f'unknown stage {stage!r}; choose one of {STAGES}.')
  loss_fn = make_loss_fn(model, per_example_loss(method, config, class_counts))
  class_w = jnp.asarray(
    weighting.class_balanced_weights(class_counts, config.cb_beta)
    if stage in ('cb', 'ours')
    else np.ones(len(class_counts)),
    jnp.float32,
  )
  lr_fn = learning_rate_fn(config, steps_per_epoch)
  optimizer = make_optimizer(config, lr_fn)
  vnet = reweighting.MetaWeightNet(config.mwn_hidden)
  vnet_optimizer = reweighting.mwn_optimizer(config.mwn_lr, config.mwn_wd)

  def update(state: TrainState, batch, dev_batch):
    labels = batch['label']
    lr = lr_fn(state.step)
    extra = {}
    if stage in ('plain', 'cb'):

      def loss(params):
        per_ex, new_stats = loss_fn(params, state.batch_stats, batch)
        return jnp.mean(class_w[labels] * per_ex), new_stats

      (train_loss, new_stats), grads = jax.value_and_grad(loss, has_aux=True)(
        state.params
      )
    else:
      kwargs = dict(inner_lr=lr, eps_grad=config.eps_grad)
      if stage == 'ours':
        out = meta.meta_step(
          loss_fn,
          state.params,
          state.batch_stats,
          batch,
          dev_batch,
          class_w[labels],
          eps_lr=config.eps_lr,
          reduction=config.inner_reduction,
          **kwargs,
        )
      elif stage == 'l2rw':
        out = reweighting.l2rw_step(
          loss_fn, state.params, state.batch_stats, batch, dev_batch, **kwargs
        )
      else:
        out, vnet_params, vnet_opt_state = reweighting.mwn_step(
          loss_fn,
          state.params,
          state.batch_stats,
          batch,
          dev_batch,
          vnet,
          state.vnet_params,
          state.vnet_opt_state,
          vnet_optimizer,
          **kwargs,
        )
        extra = dict(vnet_params=vnet_params, vnet_opt_state=vnet_opt_state)
      grads, new_stats, train_loss = out.grads, out.model_state, out.train_loss
      extra['weight_stats'] = _accumulate(
        state.weight_stats, labels, out.eps, out.weights
      )
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # A finite loss can still overflow the parameters (and NaN the next loss).
    finite = jnp.isfinite(train_loss)
    for leaf in jax.tree.leaves(params):
      finite &= jnp.all(jnp.isfinite(leaf))
    bad = ~finite
    new_state = state.replace(
      step=state.step + 1,
      params=params,
      batch_stats=new_stats,
      opt_state=opt_state,
      first_bad_step=jnp.where(
        bad & (state.first_bad_step < 0), state.step, state.first_bad_step
      ),
      **extra,
    )
    return new_state, {'train/loss': train_loss, 'learning_rate': lr}

  return update


def init_state(
  model, config, num_classes, image_shape, steps_per_epoch, key
) -> TrainState:
  """Fresh parameters, optimizer states and statistics."""
  k_model, k_vnet = jax.random.split(key)
  variables = model.init(k_model, jnp.zeros((1, *image_shape)), train=False)
  lr_fn = learning_rate_fn(config, steps_per_epoch)
  opt_state = make_optimizer(config, lr_fn).init(variables['params'])
  vnet_params, vnet_opt_state = {}, {}
  method = get_method(config.method)
  if 'mwn' in (method.stage1, method.stage2):
    vnet = reweighting.MetaWeightNet(config.mwn_hidden)
    vnet_params = vnet.init(k_vnet, jnp.zeros((1,)))['params']
    vnet_opt_state = reweighting.mwn_optimizer(
      config.mwn_lr, config.mwn_wd
    ).init(vnet_params)
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=variables['params'],
    batch_stats=variables.get('batch_stats', {}),
    opt_state=opt_state,
    vnet_params=vnet_params,
    vnet_opt_state=vnet_opt_state,
    weight_stats=jnp.zeros((num_classes, 5), jnp.float32),
    first_bad_step=jnp.full((), -1, jnp.int32),
  )
