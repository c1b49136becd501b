"""Training and evaluation: ``train_and_evaluate(config, workdir)``.

A run, step by step, each a function a test or benchmark can call:
:func:`ltjax.devices.make_mesh`, the input (:func:`ltjax.inputs.build_input`),
:func:`create_model`, :func:`seed_keys`, :func:`restore_or_init_state`,
:func:`make_stage_steps` (one jitted, donated step per stage),
:func:`train_loop` (the steps, with progress, evaluations through
:func:`evaluate_and_record`, checkpoints and preemption),
:func:`final_results` and :func:`write_results`; :func:`train_and_evaluate`
only orchestrates them.

Array datasets (CIFAR-LT) stay on the device and are gathered, augmented and
updated inside one jitted step, data parallel over every device of a
``jax.sharding.Mesh``. All randomness is a function of ``(config.seed,
step)``, so a run restored from its latest checkpoint in ``workdir`` ends
with the same parameters as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ltjax import (
  config_lib,
  devices,
  errors,
  evaluate,
  figures,
  files,
  inputs,
  methods,
  models,
  phases,
  preemption,
  provenance,
  resume,
  stages,
  summary,
  train_step,
)
from ltjax.checkpoint import Checkpointer, step_of
from ltjax.workdir_lock import WorkdirLock


def create_model(config, num_classes: int, method: methods.Method):
  """``config.model`` with ``num_classes`` outputs; the head the method's
  loss declares (LDAM's cosine head)."""
  return models.create_model(
    config.model,
    num_classes,
    cosine_head=methods.LOSSES[method.loss].cosine_head,
    compute_dtype=config.compute_dtype,
  )


def seed_keys(config):
  """``(k_init, k_train, k_dev)``, each with a leading seed axis of
  ``config.num_seeds``: seed ``s`` draws from ``jax.random.key(config.seed +
  s)``, so seed ``s`` of a vectorized run is the one-seed run of
  ``config.seed + s`` (up to the float rounding of the vmapped step)."""
  seeds = config.seed + jnp.arange(config.num_seeds)
  keys = jax.vmap(lambda s: jax.random.split(jax.random.key(s), 3))(seeds)
  return keys[:, 0], keys[:, 1], keys[:, 2]


def load_pretrained(config, model):
  """The variables ``config.init_from`` names for ``model`` (None when it is
  empty): a torchvision ResNet state_dict, converted and checked against the
  model's architecture before any data is read."""
  if not config.init_from:
    return None
  start = time.perf_counter()
  state_dict = models.read_state_dict(config.init_from)
  template = jax.eval_shape(
    functools.partial(model.init, train=False),
    jax.random.key(0),
    jnp.zeros((1, 64, 64, 3)),  # parameter shapes do not depend on the size
  )
  variables, fresh_head = models.convert_resnet(
    state_dict, template, model_name=config.model, where=config.init_from
  )
  logging.info(
    'Starting from %s: %d tensors converted in %.1f s; the head (fc) is %s.',
    config.init_from,
    len(state_dict),
    time.perf_counter() - start,
    'initialized afresh (it does not fit this model)'
    if fresh_head
    else "the file's",
  )
  return variables


def run_once_options() -> dict[str, str]:
  """XLA options for the programs a run executes once: the initialization
  and a stage's entry (a re-initialized classifier).

  Each is a few hundred small kernels, a threefry draw and a truncated
  normal per parameter, and LLVM at -O2 spends most of their compilation
  on them: 8.9 s for the tiny model's init and 7.3 s for ResNet-32's on a
  2-CPU AMD EPYC, against 1.3 s and 2.4 s at -O1 (jax 0.10.2, 2026-12-05).
  The values there are bit-identical to -O2's for the linear heads (tiny
  runs of every method end bit-identical, cRT's and LWS's entries
  included); the cosine head of LDAM normalizes its columns with another
  rounding (43 of the tiny model's 160 weights move by 1 or 2 ulp). On
  other backends, XLA's defaults.
  """
  if jax.default_backend() != 'cpu':
    return {}
  return {'xla_backend_optimization_level': '1'}


def make_init_fn(config, model, data, mesh, optimizer=None):
  """``init(k_init, pretrained=None) -> TrainState`` (vmapped over the seed
  axis of ``k_init``), jitted with :func:`run_once_options` and replicated
  over ``mesh``; ``pretrained``
  (:func:`load_pretrained`) replaces the fresh variables it names, in every
  seed. It is an argument, not a closure, so the weights are not compiled
  into the program as constants. ``optimizer``: stage 1's
  (:func:`ltjax.train_step.stage_optimizers`)."""
  init = functools.partial(
    train_step.init_state,
    model,
    config,
    data.num_classes,
    data.image_shape,
    data.steps_per_epoch,
    optimizer=optimizer,
  )
  init = train_step.over_seeds(init, in_axes=(0, None))

  def init_fn(key, pretrained=None):
    return init(key, pretrained)

  return jax.jit(
    init_fn,
    out_shardings=NamedSharding(mesh, P()),
    compiler_options=run_once_options(),
  )


def restore_or_init_state(
  ckpt: Checkpointer, init, k_init, digest=None, pretrained=None, entry=None
):
  """The newest readable checkpoint of ``ckpt``, else a fresh
  ``init(k_init, pretrained)``; refuses a checkpoint of another data split
  than ``digest`` (the split's sha256).

  The restore template comes from ``jax.eval_shape`` of the jitted ``init``
  (so it carries the state's shardings): no parameters are initialized only
  to be overwritten. ``entry``: ``(step, enter)`` of a stage that changes
  the state's structure when it starts (:func:`make_stage_entry`); a
  checkpoint after ``step`` is restored in the entered structure.
  """
  if ckpt.latest_step() is None:
    return init(k_init, pretrained)
  fresh = jax.eval_shape(init, k_init)
  template = fresh
  if entry is not None:
    entered = jax.eval_shape(entry[1], fresh)

    def template(step):
      return entered if step > entry[0] else fresh

  state = ckpt.restore_latest(template)
  step = step_of(state)
  saved = ckpt.metadata(step).get('split_sha256')
  if digest and saved and saved != digest:
    raise errors.DataError(
      f'the checkpoint at step {step} in {ckpt.directory} was trained on '
      f'another data split (sha256 {saved}) than this run reads (sha256 '
      f'{digest}): the data files or their preparation changed. Resume with '
      f'the data it was trained on, or use a fresh --workdir.'
    )
  logging.info('Resumed from the checkpoint at step %d.', step)
  return state


def meta_start_step(method: methods.Method, stage2_step: int) -> int | None:
  """The first step that reads dev batches (None: the method never does)."""
  stage1, stage2 = method.stages
  if stage1.uses_dev:
    return 0
  return stage2_step if stage2.uses_dev else None


def make_stage_steps(config, model, method, data, optimizers=None) -> dict:
  """``{1: step, 2: step}``: the jitted step of each stage (one shared
  program where both stages do the same). ``optimizers``:
  :func:`ltjax.train_step.stage_optimizers` (built here by default)."""
  if optimizers is None:
    optimizers = train_step.stage_optimizers(
      method, config, data.steps_per_epoch
    )

  def make(stage):
    update = train_step.make_update_fn(
      stage, model, method, config, data.class_counts, data.steps_per_epoch,
      optimizers[stage],
    )  # fmt: skip
    sampler = methods.STAGES[stage].sampler
    return train_step.make_train_step(update, data, sampler)

  steps = {1: make(method.stage1)}
  same = method.stage2 == method.stage1
  steps[2] = steps[1] if same else make(method.stage2)
  return steps


def make_stage_entry(config, model, method, data, k_init, optimizers):
  """``(step, enter)``: the jitted start of stage 2 when its stage changes
  the state's structure or re-initializes a part of the model (cRT, LWS:
  :func:`ltjax.stages.enter_stage`), else None. A re-initialized classifier
  draws from ``fold_in(k_init, step)`` of its seed."""
  spec = methods.STAGES[method.stage2]
  if not spec.enters or method.stage1 == method.stage2:
    return None
  step = config.stage2_epoch * data.steps_per_epoch
  optimizer, _ = optimizers[method.stage2]
  image = jnp.zeros((1, *data.image_shape))

  def enter(state, key):
    fresh = model.init(jax.random.fold_in(key, step), image, train=False)
    return stages.enter_stage(
      state,
      trains=spec.trains,
      reinit_classifier=spec.reinit_classifier,
      fresh_params=fresh['params'],
      optimizer=optimizer,
    )

  entered = train_step.over_seeds(enter)
  # A jitted function of the state alone (k_init a constant of it): it is
  # called, and shape-evaluated on restore, at the top level, where XLA
  # options may be given.
  return step, jax.jit(
    lambda state: entered(state, k_init), compiler_options=run_once_options()
  )


def evaluate_state(
  predict, state, data, logit_scale, posthoc=None
) -> list[dict]:
  """Test and dev metrics of every seed (:func:`ltjax.evaluate.eval_records`);
  ``posthoc`` (a key of :data:`ltjax.methods.POSTHOC`) adjusts the logits
  with the ``τ`` of each seed's lowest dev error."""
  test, dev = predict(state, 'test'), predict(state, 'dev')
  step = step_of(state)
  adjust = None
  if posthoc:
    spec = methods.POSTHOC[posthoc]
    params = jax.device_get(state.params)
    head = params[stages.classifier_name(params)]
    adjust = evaluate.Posthoc(spec.adjust, spec.taus, head)
  return evaluate.eval_records(
    step,
    step // data.steps_per_epoch,
    test,
    dev,
    data.class_counts,
    logit_scale,
    adjust,
  )


def log_epoch_remainder(config, data) -> None:
  """Says how many training images each epoch leaves out: full batches
  only, so ``N mod (batch x processes)`` of them, a different draw each
  epoch (the official code keeps a last partial batch instead)."""
  n, used = data.num_train_examples, data.steps_per_epoch * config.batch_size
  if n > used:
    logging.info(
      'An epoch is %d full batches of %d: %d of the %d training images '
      '(%.1f%%), a different draw each epoch, are left out of it (the '
      'official code keeps a last partial batch).',
      data.steps_per_epoch, config.batch_size, n - used, n,
      100 * (n - used) / n,
    )  # fmt: skip


def check_finite(state, ckpt: Checkpointer, config, spe: int) -> None:
  """Stops at the first non-finite step the compiled step recorded, with
  advice that names the stage's own rates (:func:`nonfinite_advice`)."""
  bad = np.asarray(jax.device_get(state.first_bad_step))
  bad = int(bad[bad >= 0].min()) if np.any(bad >= 0) else -1
  if bad >= 0:
    ckpt.wait()
    raise errors.NonFiniteError(nonfinite_advice(bad, ckpt, config, spe))


def stage_rates(config, stage: str, step: int, spe: int) -> str:
  """``'eps_lr=10000, the learning rate 0.001 (...)'``: what sets the step
  size of ``stage`` at ``step``: its learning rate and its own rates (its
  hyperparameters named ``*_lr``)."""
  spec = methods.STAGES[stage]
  own = [f'{k}={config[k]:g}' for k in spec.hyperparameters if k.endswith('_lr')]
  if spec.lr == 'schedule':
    lr = float(train_step.learning_rate_fn(config, spe)(step))
    epoch = step // spe
    passed = sum(epoch >= b for b in config.lr_boundaries)
    scaled = config_lib.effective_learning_rate(config) != config.learning_rate
    own.append(
      f'the learning rate {lr:g} (learning_rate'
      + (' × batch_size / reference_batch_size' if scaled else '')
      + f' × lr_decay^{passed}'
      + (', warming up' if epoch < config.warmup_epochs else '')
      + ')'
    )
  return ', '.join(own)


def nonfinite_advice(bad: int, ckpt: Checkpointer, config, spe: int) -> str:
  """What a non-finite step says: where, the stage and its rates, and a fix
  that the workdir accepts (:mod:`ltjax.resume`). In a stage 2 that differs
  from stage 1, its checkpoints are moved aside, so that a rerun with a
  lower stage-2 rate restarts stage 2 from the end of stage 1."""
  method = methods.get_method(config.method)
  stage2_step = config.stage2_epoch * spe
  stage = 2 if bad >= stage2_step else 1
  name = (method.stage1, method.stage2)[stage - 1]
  head = (
    f'non-finite training loss or parameters at step {bad} (epoch '
    f'{bad // spe}, stage {stage}: {name}); stopped. Its rates: '
    f'{stage_rates(config, name, bad, spe)}.'
  )
  steps = ckpt.all_steps()
  if stage == 2 and method.stage2 != method.stage1:
    fork = [s for s in steps if s <= stage2_step]
    if not fork:
      return (
        f'{head} No checkpoint of stage 1 is kept in {ckpt.directory}: '
        f'rerun with a lower rate of stage 2 in a fresh --workdir (a higher '
        f'keep_checkpoints keeps the end of stage 1 longer).'
      )
    later = [s for s in steps if s > stage2_step]
    moved = (
      f' Its stage-2 checkpoints were moved to '
      f'{ckpt.move_aside(later, "checkpoints_diverged")}.'
      if later
      else ''
    )
    return (
      f'{head}{moved} Rerun with a lower rate of stage 2 (a stage-2 field, '
      f'or the schedule after epoch {config.stage2_epoch}) in the same '
      f'--workdir: stage 2 restarts from the checkpoint at step {fork[-1]}, '
      f'the end of stage 1. Or check the data.'
    )
  if not steps:
    return (
      f'{head} No checkpoint had been written: rerun with a lower rate in '
      f'the same --workdir (one with no checkpoint takes any config), or '
      f'check the data.'
    )
  return (
    f'{head} The checkpoints in {ckpt.directory} (the last good one at step '
    f'{steps[-1]}) were trained at these rates: rerun with a lower rate in a '
    f'fresh --workdir, or check the data.'
  )


UNITS = (
  'percent: every error, accuracy, ECE and reliability bin; plain numbers: '
  'ε, weights and counts; floats to 6 significant digits'
)


def run_record(started: float, start_step: int) -> dict:
  """What ran this call of the trainer: its wall time (from ``started``,
  a ``time.perf_counter()``), where it resumed, the commit, the package
  versions and the device."""
  return {
    'wall_seconds': round(time.perf_counter() - started, 1),
    'resumed_from_step': start_step,
    'commit': provenance.git_commit(),
    'versions': provenance.versions(),
    'device': provenance.device(),
  }


def final_results(config, data, evals, state, run=None) -> dict:
  """results.json: per seed (``seeds``, seed ``config.seed + s`` at ``s``)
  the last and the dev-selected model, their mean and standard deviation
  over seeds (``over_seeds``), and ``run`` (:func:`run_record`) where
  given. One schema for any number of seeds."""
  per_seed = [
    {'seed': config.seed + s, **r}
    for s, r in enumerate(evaluate.last_and_dev_selected(evals))
  ]
  results = {
    'title': config_lib.run_title(config),
    'dataset': config.dataset,
    'method': config.method,
    'data': data.summary,
    'split_sha256': data.digest,
    'train_class_counts': data.class_counts.tolist(),
    'steps': step_of(state),
    'seeds': per_seed,
    'over_seeds': evaluate.summarize_seeds(per_seed),
    'conditional_weights': evaluate.weight_stats_table(
      np.asarray(state.weight_stats).sum(0)
    ),
    'units': UNITS,
  }
  if run is not None:
    results['run'] = run
  return evaluate.rounded(results)


def write_results(workdir, results) -> None:
  files.write_text(
    os.path.join(workdir, 'results.json'), json.dumps(results, indent=2)
  )
  written = figures.write_figures(results, workdir)
  for r in results['seeds']:
    logging.info(
      'Seed %d: final test top-1 error %.2f%% (last), %.2f%% (dev-selected, '
      'epoch %d).',
      r['seed'], r['last']['test']['top1_error'],
      r['dev_selected']['test']['top1_error'], r['dev_selected']['epoch'],
    )  # fmt: skip
  logging.info(
    'Results: %s; figures: %s.',
    os.path.join(workdir, 'results.json'),
    ', '.join(os.path.join(workdir, os.path.basename(p)) for p in written),
  )


def progress_steps(config, total_steps, stage2_step) -> set[int]:
  """Steps logged whatever ``log_every_steps`` is: each stage's quarters
  and its end (so a short run still shows its training loss)."""
  out = {total_steps}
  for start, end in ((0, stage2_step), (stage2_step, total_steps)):
    if end > start:
      out |= {start + -(-k * (end - start) // 4) for k in range(1, 5)}
  return out


def train_loop(
  config, state, steps, feeds, spe, ckpt, writer, record_eval, entry=None
):
  """Runs ``state`` from its step to the last of the schedule and returns it.

  Logs progress every ``config.log_every_steps``, calls ``record_eval(state)``
  every ``config.eval_every_epochs`` and checkpoints every
  ``config.checkpoint_every_steps`` (each also at the last step). A SIGTERM
  or SIGINT checkpoints the step in flight and raises
  :class:`ltjax.preemption.Preempted`. ``entry``: ``(step, enter)``
  (:func:`make_stage_entry`), applied before that step runs.
  """
  start_step = step_of(state)
  total_steps, stage2_step = config.num_epochs * spe, config.stage2_epoch * spe
  eval_every = config.eval_every_epochs * spe
  images = config.batch_size * np.size(state.step)  # every seed's batch
  progress = summary.Progress(images, start_step, total_steps, spe, stage2_step)
  log_steps = progress_steps(config, total_steps, stage2_step)
  method = methods.get_method(config.method)
  stage_names = method.stage1, method.stage2
  logging.info(
    'Training %s (%s) on %s: %d steps (%d per epoch), stage 2 from step '
    '%d; starting at step %d on %d device(s).',
    config.method, config.model, config_lib.run_title(config), total_steps,
    spe, stage2_step,
    start_step, jax.device_count(),
  )  # fmt: skip
  started = time.perf_counter()
  with preemption.Watch() as watch:
    for step in range(start_step, total_steps):
      stage = 1 if step < stage2_step else 2
      if entry is not None and step == entry[0]:
        state = entry[1](state)
      if step == start_step or (
        step == stage2_step and steps[2] is not steps[1]
      ):
        logging.info(
          'Stage %d (%s) at step %d: compiling its step, then training.',
          stage, stage_names[stage - 1], step,
        )  # fmt: skip
      state, metrics = steps[stage](state, next(feeds))
      done = step + 1
      if step == start_step:
        _log_first_step(metrics, started)
      if done % config.log_every_steps == 0 or done in log_steps:
        check_finite(state, ckpt, config, spe)
        scalars = progress(done, stage, metrics)
        if writer:
          writer.write(done, scalars)
      if done % eval_every == 0 or done == total_steps:
        record_eval(state)
      # The end of stage 1 is always kept: where a diverged stage 2 restarts.
      if (
        done % config.checkpoint_every_steps == 0
        or done == total_steps
        or (done == stage2_step and stage_names[0] != stage_names[1])
      ):
        check_finite(state, ckpt, config, spe)
        ckpt.save(state)
      if watch.requested(done) and done < total_steps:
        _stop_preempted(state, ckpt, writer, watch.signum, config, spe)
  check_finite(state, ckpt, config, spe)
  return state


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains as ``config`` says, evaluates, and writes results to ``workdir``.

  Resumes from the latest checkpoint in ``workdir`` when there is one.
  Returns the final results (also written to ``workdir/results.json``).
  The workdir is locked for the run (:mod:`ltjax.workdir_lock`): a second
  run on it is refused.
  """
  config_lib.check_config(config)
  os.makedirs(workdir, exist_ok=True)
  lead = jax.process_index() == 0
  with WorkdirLock(workdir) if lead else contextlib.nullcontext():
    return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config, workdir: str) -> dict:
  started = time.perf_counter()
  resume.check_workdir(config, workdir)  # before any data is read
  devices.log_platform()
  if note := config_lib.lr_scaling_note(config):
    logging.info('%s.', note)
  method = methods.get_method(config.method)
  mesh = devices.make_mesh()
  with phases.phase('load the pretrained weights'):
    pretrained = load_pretrained(config, create_model(config, 1, method))
  with phases.phase('build the input'):
    data = inputs.build_input(config, mesh)
  logging.info('%s (split sha256 %s)', data.summary, data.digest[:12])
  log_epoch_remainder(config, data)
  model = create_model(config, data.num_classes, method)
  k_init, k_train, k_dev = seed_keys(config)
  ckpt = Checkpointer(
    workdir,
    config.keep_checkpoints,
    {
      'split_sha256': data.digest,
      'steps_per_epoch': data.steps_per_epoch,
      'config': resume.fingerprint(config),
    },
  )
  optimizers = train_step.stage_optimizers(
    method, config, data.steps_per_epoch
  )
  init = make_init_fn(config, model, data, mesh, optimizers[method.stage1][0])
  entry = make_stage_entry(config, model, method, data, k_init, optimizers)
  with phases.phase('initialize or restore the state'):
    state = jax.block_until_ready(
      restore_or_init_state(ckpt, init, k_init, data.digest, pretrained, entry)
    )
  start_step = step_of(state)
  if start_step:  # the restore may have fallen back past the one checked
    resume.check_checkpoint(config, ckpt, start_step)
  stage2_step = config.stage2_epoch * data.steps_per_epoch
  meta_start = meta_start_step(method, stage2_step)
  samplers = tuple(
    (step, stage.sampler)
    for step, stage in zip((0, stage2_step), method.stages, strict=True)
  )
  feeds = data.train_feeds(k_train, k_dev, start_step, meta_start, samplers)
  lead = jax.process_index() == 0
  writer = summary.MetricWriter(workdir, start_step) if lead else None
  evals = summary.read_evals(workdir, start_step)
  record_eval = functools.partial(
    evaluate_and_record,
    train_step.make_predict(model, data, mesh),
    data,
    # The calibration error reads the probabilities the loss trains: LDAM's
    # cosine head is scaled by s before its softmax.
    methods.logit_scale(method, config),
    evals,
    workdir if lead else None,
    writer,
    posthoc=method.posthoc,
  )
  steps = make_stage_steps(config, model, method, data, optimizers)
  state = train_loop(
    config, state, steps, feeds, data.steps_per_epoch, ckpt, writer,
    record_eval, entry,
  )  # fmt: skip
  ckpt.close()
  if not evals or evals[-1][0]['step'] != step_of(state):
    record_eval(state)
  results = final_results(
    config, data, evals, state, run_record(started, start_step)
  )
  if lead:
    write_results(workdir, results)
    writer.close()
  return results


def _log_first_step(metrics, started) -> None:
  jax.block_until_ready(metrics)
  logging.info(
    'Start: the first step (reading its batch, compiling, running) took '
    '%.2f s.',
    time.perf_counter() - started,
  )


def _stop_preempted(state, ckpt, writer, signum, config, spe) -> None:
  """Checkpoints ``state``, flushes the logs and raises ``Preempted``."""
  check_finite(state, ckpt, config, spe)
  ckpt.save(state)
  ckpt.close()
  if writer:
    writer.close()
  error = preemption.Preempted(step_of(state), signum, ckpt.directory)
  logging.warning('%s', error)
  raise error


def evaluate_and_record(
  predict, data, logit_scale, evals, workdir, writer, state, posthoc=None
) -> None:
  """Evaluates ``state`` (:func:`evaluate_state`), appends the records to
  ``evals`` and logs them; on process 0 (``workdir`` set) also writes
  ``evals.jsonl`` and the scalars."""
  records = evaluate_state(predict, state, data, logit_scale, posthoc)
  evals.append(records)
  logging.info(
    'epoch %d: test top-1 error %s%%, dev top-1 error %s%%',
    records[0]['epoch'],
    ' '.join(f'{r["test"]["top1_error"]:.2f}' for r in records),
    ' '.join(f'{r["dev_top1_error"]:.2f}' for r in records),
  )
  if workdir is None:
    return
  summary.write_evals(workdir, evals)
  writer.write(
    records[0]['step'],
    {
      'dev/top1_error': np.mean([r['dev_top1_error'] for r in records]),
      'test/top1_error': np.mean([r['test']['top1_error'] for r in records]),
    },
  )
