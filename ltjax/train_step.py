"""The training state, its update per stage, and the one jitted step.

An update is a stage's gradient function (:mod:`ltjax.stages`) followed by
one shared :func:`apply_gradients` (optax ``chain`` style): each stage of
:data:`ltjax.methods.STAGES` only says how it gets ``(grads, batch_stats,
loss)``, which extra state it carries and which parameters it trains. :func:`make_train_step` wraps an
update and an input's ``batch(feed, step)`` into the single jitted,
state-donating step of the trainer; :func:`make_predict` is the jitted
evaluation pass.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ltjax import config_lib, methods, stages
from ltjax.models import make_loss_fn, scaled_logits, torch_import
from ltjax.models.conv import xla_cpu_compiler_options
from ltjax.stages import StageOutput


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


def learning_rate_fn(config, steps_per_epoch: int):
  """``lr(step)``: the base rate, ``learning_rate`` scaled with the batch
  size (:func:`ltjax.config_lib.effective_learning_rate`), with step decays
  at ``config.lr_boundaries`` (epochs) and an optional linear warm-up over
  ``config.warmup_epochs`` (LDAM-DRW uses 5)."""
  boundaries = jnp.asarray(list(config.lr_boundaries), jnp.float32)
  base = config_lib.effective_learning_rate(config)

  def lr(step):
    epoch = step // steps_per_epoch
    passed = jnp.sum(epoch >= boundaries)
    value = base * config.lr_decay**passed
    if config.warmup_epochs:
      warm = (epoch + 1) / config.warmup_epochs
      value = value * jnp.minimum(warm, 1.0)
    return value

  return lr


def classifier_lr_fn(config, steps_per_epoch: int):
  """``lr(step)`` of a stage that retrains the classifier (cRT, LWS):
  ``config.classifier_lr``, cosine to 0 from ``stage2_epoch`` to the end
  (Kang et al.'s schedule)."""
  start = config.stage2_epoch * steps_per_epoch
  length = max((config.num_epochs - config.stage2_epoch) * steps_per_epoch, 1)

  def lr(step):
    t = jnp.clip((step - start) / length, 0.0, 1.0)
    return config.classifier_lr * 0.5 * (1 + jnp.cos(jnp.pi * t))

  return lr


def stage_optimizer(stage, config, steps_per_epoch: int):
  """``(optimizer, lr_fn)`` of a stage (:class:`ltjax.methods.Stage`)."""
  if stage.lr == 'classifier':
    lr_fn = classifier_lr_fn(config, steps_per_epoch)
  else:
    lr_fn = learning_rate_fn(config, steps_per_epoch)
  return make_optimizer(config, lr_fn), lr_fn


def stage_optimizers(method, config, steps_per_epoch: int) -> dict:
  """``{stage: (optimizer, lr_fn)}`` of both stages of ``method``
  (:class:`ltjax.methods.Method`), each built once for all its users: the
  state's initialization (stage 1), the stage's update, and the start of a
  stage that re-initializes the optimizer (cRT, LWS)."""
  return {
    name: stage_optimizer(methods.STAGES[name], config, steps_per_epoch)
    for name in dict.fromkeys((method.stage1, method.stage2))
  }


def make_optimizer(config, lr_fn) -> optax.GradientTransformation:
  """SGD with (Nesterov) momentum and PyTorch-style coupled weight decay."""
  return optax.chain(
    optax.add_decayed_weights(config.weight_decay),
    optax.sgd(lr_fn, momentum=config.momentum, nesterov=config.nesterov),
  )


def init_state(
  model,
  config,
  num_classes,
  image_shape,
  steps_per_epoch,
  key,
  pretrained=None,
  optimizer=None,
) -> TrainState:
  """Fresh parameters, optimizer states and statistics.

  ``pretrained``: variables that replace the fresh ones they name (a
  converted torchvision ResNet, :mod:`ltjax.models.torch_import`; without
  its head when that does not fit). ``optimizer``: stage 1's (the trainer
  passes the one its stage-1 update uses); by default
  :func:`stage_optimizer` of the method's stage 1.
  """
  k_model, k_vnet = jax.random.split(key)
  variables = model.init(k_model, jnp.zeros((1, *image_shape)), train=False)
  variables = torch_import.merge(variables, pretrained)
  if optimizer is None:
    stage1 = methods.STAGES[methods.get_method(config.method).stage1]
    optimizer, _ = stage_optimizer(stage1, config, steps_per_epoch)
  opt_state = optimizer.init(variables['params'])
  extra = {'vnet_params': {}, 'vnet_opt_state': {}}
  for stage in methods.get_method(config.method).stages:
    if stage.init_extra:
      extra.update(stage.init_extra(config, k_vnet))
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=variables['params'],
    batch_stats=variables.get('batch_stats', {}),
    opt_state=opt_state,
    **extra,
    weight_stats=jnp.zeros((num_classes, 5), jnp.float32),
    first_bad_step=jnp.full((), -1, jnp.int32),
  )


# --- A stage's update -----------------------------------------------------------


def make_grad_fn(stage: str, loss_fn, config, class_counts):
  """``grad_fn(state, batch, dev_batch, lr) -> StageOutput`` of ``stage``
  (a key of :data:`ltjax.methods.STAGES`)."""
  if stage not in methods.STAGES:
    raise ValueError(
      f'unknown stage {stage!r}; choose one of {tuple(methods.STAGES)}.'
    )
  spec = methods.STAGES[stage]
  class_w = methods.class_weights(spec, config, class_counts)
  return spec.grads(loss_fn, class_w, config)


def apply_gradients(
  state: TrainState, out: StageOutput, optimizer, trains: str = 'all'
):
  """One optimizer step; records the first non-finite loss or parameters.

  ``trains`` (:attr:`ltjax.methods.Stage.trains`): parameters outside it
  keep their values bit for bit (a frozen backbone).
  """
  updates, opt_state = optimizer.update(
    out.grads, state.opt_state, state.params
  )
  params = optax.apply_updates(state.params, updates)
  if trains != 'all':
    params = jax.tree.map(
      lambda keep, new, old: new if keep else old,
      stages.trainable_mask(state.params, trains),
      params,
      state.params,
    )
  # A finite loss can still overflow the parameters (and NaN the next loss).
  finite = jnp.isfinite(out.train_loss)
  for leaf in jax.tree.leaves(params):
    finite &= jnp.all(jnp.isfinite(leaf))
  bad = ~finite
  return state.replace(
    step=state.step + 1,
    params=params,
    batch_stats=out.batch_stats,
    opt_state=opt_state,
    first_bad_step=jnp.where(
      bad & (state.first_bad_step < 0), state.step, state.first_bad_step
    ),
    **out.extra,
  )


def make_update_fn(
  stage: str,
  model,
  method,
  config,
  class_counts,
  steps_per_epoch,
  optimizer_and_lr=None,
):
  """``update(state, batch, dev_batch) -> (state, metrics)`` for one stage.

  Pure and jittable; ``dev_batch`` is ignored by the non-meta stages.
  ``optimizer_and_lr``: ``(optimizer, lr_fn)`` of the stage (the trainer
  builds each stage's once, :func:`stage_optimizers`, and passes it to
  every user); by default built here.
  """
  spec = methods.STAGES[stage]
  loss_fn = make_loss_fn(
    model,
    methods.per_example_loss(method, config, class_counts),
    train=spec.trains == 'all',
  )
  grad_fn = make_grad_fn(stage, loss_fn, config, class_counts)
  if optimizer_and_lr is None:
    optimizer_and_lr = stage_optimizer(spec, config, steps_per_epoch)
  optimizer, lr_fn = optimizer_and_lr

  def update(state: TrainState, batch, dev_batch):
    lr = lr_fn(state.step)
    out = grad_fn(state, batch, dev_batch, lr)
    new_state = apply_gradients(state, out, optimizer, spec.trains)
    return new_state, {'train/loss': out.train_loss, 'learning_rate': lr}

  return update


# --- The jitted step and evaluation pass ----------------------------------------


def _drop_axis(x):
  return jnp.reshape(x, x.shape[1:])  # a bitcast, unlike x[0]


def _add_axis(x):
  return jnp.reshape(x, (1, *x.shape))


def over_seeds(fn, in_axes=0):
  """``fn`` mapped over the leading seed axis of its arguments.

  ``in_axes`` is ``jax.vmap``'s, with 0 or None at each position. Several
  seeds are vmapped. A seed axis of size 1 is reshaped away and put back
  instead, behind optimization barriers, so that XLA compiles ``fn``
  exactly as it would without the axis: a vmapped program rounds
  differently (after 24 steps of a tiny ResNet, parameters differed by up
  to 1e-6 with cross-entropy and 7e-3 with the meta step), and even the
  reshapes alone, fused into the step, moved BatchNorm's running
  statistics by an ulp. A one-seed run stays bit-identical to one without
  the axis. The size is a static shape: one trace each.
  """
  vmapped = jax.vmap(fn, in_axes=in_axes)

  def call(*args):
    axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
    # Per argument, its subtrees that have the seed axis (None: shared).
    seeded = [
      jax.tree.map(
        lambda a, x: x if a == 0 else None, axis, arg,
        is_leaf=lambda a: a is None,
      )  # fmt: skip
      for axis, arg in zip(axes, args, strict=True)
    ]
    if jax.tree.leaves(seeded)[0].shape[0] != 1:
      return vmapped(*args)
    first = [
      jax.tree.map(
        lambda a, x: jax.tree.map(_drop_axis, x) if a == 0 else x,
        axis, arg, is_leaf=lambda a: a is None,
      )  # fmt: skip
      for axis, arg in zip(axes, args, strict=True)
    ]
    first = jax.lax.optimization_barrier(first)
    return jax.tree.map(_add_axis, jax.lax.optimization_barrier(fn(*first)))

  return call


def make_train_step(update, inputs, sampler='instance'):
  """``step(state, feed) -> (state, metrics)``: batch, update; jitted once.

  ``inputs.batch(feed, step, sampler)`` makes the batches inside the jit
  (``sampler``: :data:`ltjax.methods.SAMPLERS`; the device
  input gathers and augments there; the host input passes its sharded
  batches through), so one compiled program runs every step of a stage.
  The state carries a leading seed axis (size 1 for one seed) and the step
  maps over it (:func:`over_seeds`; ``inputs.feed_axes`` says which parts
  of the feed have one too); each seed's batch is sharded over the mesh's
  ``data`` axis. The state is donated.
  """

  def step_fn(state, feed):
    batch, dev_batch = inputs.batch(feed, state.step, sampler)
    batch, dev_batch = jax.lax.with_sharding_constraint(
      (batch, dev_batch), inputs.batch_sharding
    )
    return update(state, batch, dev_batch)

  return jax.jit(
    over_seeds(step_fn, in_axes=(0, inputs.feed_axes)),
    donate_argnums=0,
    compiler_options=xla_cpu_compiler_options(),
  )


def make_predict(model, inputs, mesh):
  """``predict(state, split) -> (logits [S, n, C], labels [n])`` on host,
  for the ``S`` seeds of ``state``.

  The model runs in eval mode on ``inputs.eval_batches(split)``, each
  prepared inside the jit by ``inputs.prepare_eval``, sharded over the
  mesh's ``data`` axis, and replicated to every process.
  """

  def apply_fn(params, batch_stats, images):
    variables = {'params': params, 'batch_stats': batch_stats}
    return scaled_logits(params, model.apply(variables, images, train=False))

  def logits_fn(params, batch_stats, x):
    images = inputs.prepare_eval(x)
    images = jax.lax.with_sharding_constraint(images, inputs.batch_sharding)
    return over_seeds(apply_fn, in_axes=(0, 0, None))(
      params, batch_stats, images
    )

  jitted = jax.jit(logits_fn, out_shardings=NamedSharding(mesh, P()))

  def predict(state, split):
    logits, labels, mask = [], [], []
    for x, y, m in inputs.eval_batches(split):
      logits.append(jitted(state.params, state.batch_stats, x))
      labels.append(y)
      mask.append(m)
    mask = np.concatenate(mask)
    logits = np.concatenate(jax.device_get(logits), axis=-2)
    return logits[..., mask, :], np.concatenate(labels)[mask]

  return predict
