"""Training and evaluation: ``train_and_evaluate(config, workdir)``.

The loop keeps array datasets (CIFAR-LT) on the device and gathers, augments
and updates inside one jitted step, data parallel over every device of a
``jax.sharding.Mesh``. All randomness is a function of ``(config.seed,
step)``, so a run restored from its latest checkpoint in ``workdir`` ends with
the same parameters as an uninterrupted one.
"""

from __future__ import annotations

import functools
import json
import os
import time

import jax
import numpy as np
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ltjax import evaluate, figures, methods, models, summary
from ltjax import input_pipeline as inputs
from ltjax.checkpoint import Checkpointer

# Fields that may change between a run and its resumption.
RESUMABLE_FIELDS = (
  'log_every_steps',
  'checkpoint_every_steps',
  'keep_checkpoints',
)

MODELS = {
  'tiny': models.TinyResNet,
  'resnet32': models.ResNet32,
  'resnet10': models.ResNet10,
  'resnet50': models.ResNet50,
  'resnet152': models.ResNet152,
}


def create_model(config, num_classes: int, method: methods.Method):
  if config.model not in MODELS:
    raise ValueError(
      f'unknown model {config.model!r} (config.model); choose one of '
      f'{sorted(MODELS)}.'
    )
  return MODELS[config.model](
    num_classes=num_classes, cosine_head=method.loss == 'ldam'
  )


def make_mesh() -> jax.sharding.Mesh:
  """A 1-D ``'data'`` mesh over every device of every process."""
  return jax.make_mesh(
    (jax.device_count(),), ('data',), axis_types=(jax.sharding.AxisType.Auto,)
  )


def check_config(config) -> None:
  """Stops a bad config before any data is read."""
  inputs.check_dataset_name(config.dataset)
  methods.get_method(config.method)
  if config.model not in MODELS:
    create_model(config, 2, methods.get_method(config.method))
  if config.data.imbalance and config.data.imbalance < 1:
    raise ValueError(
      f'config.data.imbalance must be >= 1 (or 0 to keep the data as it is), '
      f'got {config.data.imbalance}.'
    )
  for field in ('batch_size', 'dev_batch_size', 'num_epochs'):
    if config[field] < 1:
      raise ValueError(f'config.{field} must be >= 1, got {config[field]}.')
  if not 0 <= config.stage2_epoch <= config.num_epochs:
    raise ValueError(
      f'config.stage2_epoch must lie in [0, num_epochs={config.num_epochs}], '
      f'got {config.stage2_epoch}.'
    )
  n = jax.device_count()
  for field in ('batch_size', 'dev_batch_size'):
    if config[field] % n:
      raise ValueError(
        f'config.{field}={config[field]} does not divide evenly over {n} '
        f'devices; use a multiple of {n}.'
      )


def _check_workdir_config(config, workdir) -> None:
  path = os.path.join(workdir, 'config.json')
  mine = json.loads(config.to_json_best_effort())
  if os.path.exists(path):
    with open(path) as f:
      theirs = json.load(f)
    differ = sorted(
      k
      for k in set(mine) | set(theirs)
      if k not in RESUMABLE_FIELDS and mine.get(k) != theirs.get(k)
    )
    if differ:
      raise ValueError(
        f'workdir {workdir} holds a run of a different config (fields '
        f'{differ} differ); use a fresh --workdir or the same config.'
      )
  elif jax.process_index() == 0:
    with open(path, 'w') as f:
      json.dump(mine, f, indent=2, sort_keys=True)


def _weight_stats_table(stats) -> dict:
  stats = np.asarray(stats, np.float64)
  count = np.maximum(stats[:, 0], 1)
  mean_e, mean_w = stats[:, 1] / count, stats[:, 3] / count
  return {
    'count': stats[:, 0].tolist(),
    'eps_mean': mean_e.tolist(),
    'eps_std': np.sqrt(np.maximum(stats[:, 2] / count - mean_e**2, 0)).tolist(),
    'weight_mean': mean_w.tolist(),
    'weight_std': np.sqrt(
      np.maximum(stats[:, 4] / count - mean_w**2, 0)
    ).tolist(),
  }


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains as ``config`` says, evaluates, and writes results to ``workdir``.

  Resumes from the latest checkpoint in ``workdir`` when there is one.
  Returns the final results (also written to ``workdir/results.json``).
  """
  check_config(config)
  os.makedirs(workdir, exist_ok=True)
  _check_workdir_config(config, workdir)
  method = methods.get_method(config.method)
  mesh = make_mesh()
  data = inputs.build_input(config, mesh)
  logging.info('%s (split sha256 %s)', data.summary, data.digest[:12])
  steps_per_epoch = data.steps_per_epoch
  total_steps = config.num_epochs * steps_per_epoch
  stage2_step = config.stage2_epoch * steps_per_epoch

  replicated = NamedSharding(mesh, P())
  model = create_model(config, data.num_classes, method)
  key = jax.random.key(config.seed)
  k_init, k_train, k_dev = jax.random.split(key, 3)
  state = jax.jit(
    functools.partial(
      methods.init_state,
      model,
      config,
      data.num_classes,
      data.image_shape,
      steps_per_epoch,
    ),
    out_shardings=replicated,
  )(k_init)

  ckpt = Checkpointer(workdir, config.keep_checkpoints)
  if ckpt.latest_step() is not None:
    state = ckpt.restore_latest(state)
    logging.info('Resumed from the checkpoint at step %d.', int(state.step))
  start_step = int(state.step)

  is_meta = {
    k: stage in methods.META_STAGES
    for k, stage in ((1, method.stage1), (2, method.stage2))
  }
  meta_start = 0 if is_meta[1] else (stage2_step if is_meta[2] else None)

  def make_step(stage):
    update = methods.make_update_fn(
      stage, model, method, config, data.class_counts, steps_per_epoch
    )
    return data.make_train_step(update, k_train, k_dev, start_step, meta_start)

  steps = {1: make_step(method.stage1)}
  steps[2] = (
    steps[1] if method.stage2 == method.stage1 else make_step(method.stage2)
  )

  def apply_fn(params, batch_stats, images):
    variables = {'params': params, 'batch_stats': batch_stats}
    return model.apply(variables, images, train=False)

  predict = data.make_predict(apply_fn)
  writer = None
  if jax.process_index() == 0:
    writer = summary.MetricWriter(workdir, resume_step=start_step)
  evals_path = os.path.join(workdir, 'evals.jsonl')
  evals = []
  if os.path.exists(evals_path):
    evals = [
      e for e in summary.read_jsonl(evals_path) if e['step'] <= start_step
    ]

  def run_eval(state):
    test = evaluate.classification_metrics(
      *predict(state, 'test'), data.class_counts
    )
    dev = evaluate.classification_metrics(
      *predict(state, 'dev'), data.class_counts
    )
    record = {
      'step': int(state.step),
      'epoch': int(state.step) // steps_per_epoch,
      'dev_top1_error': dev['top1_error'],
      'test': test,
    }
    evals.append(record)
    if jax.process_index() == 0:
      with open(evals_path + '.tmp', 'w') as f:
        f.writelines(json.dumps(e) + '\n' for e in evals)
      os.replace(evals_path + '.tmp', evals_path)
      writer.write(
        state.step,
        {
          'dev/top1_error': dev['top1_error'],
          'test/top1_error': test['top1_error'],
        },
      )
    return record

  def check_finite(state):
    bad = int(jax.device_get(state.first_bad_step))
    if bad >= 0:
      ckpt.wait()
      raise FloatingPointError(
        f'non-finite training loss or parameters at step {bad}; stopped. '
        f'The last good checkpoint (step {ckpt.latest_step()}) is kept in '
        f'{ckpt.directory}; lower the learning rate or check the data.'
      )

  logging.info(
    'Training %s on %s: %d steps (%d per epoch), stage 2 from step %d; '
    'starting at step %d on %d device(s).',
    config.method, config.dataset, total_steps, steps_per_epoch, stage2_step,
    start_step, jax.device_count(),
  )  # fmt: skip
  eval_every = config.eval_every_epochs * steps_per_epoch
  t_last, step_last = time.perf_counter(), start_step
  metrics = None
  for step in range(start_step, total_steps):
    stage = 1 if step < stage2_step else 2
    state, metrics = steps[stage](state, is_meta[stage])
    done = step + 1
    if done % config.log_every_steps == 0 or done == total_steps:
      check_finite(state)
      now = time.perf_counter()
      rate = (done - step_last) * config.batch_size / (now - t_last)
      scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
      scalars['images_per_second'] = rate
      eta = (total_steps - done) * config.batch_size / rate
      logging.info(
        'step %d/%d epoch %.1f stage %d loss %.4f lr %.3g %.0f img/s, '
        '%.0f s left',
        done, total_steps, done / steps_per_epoch, stage,
        scalars['train/loss'], scalars['learning_rate'], rate, eta,
      )  # fmt: skip
      if writer:
        writer.write(done, scalars)
      t_last, step_last = now, done
    if done % eval_every == 0 or done == total_steps:
      record = run_eval(state)
      logging.info(
        'epoch %d: test top-1 error %.2f%%, dev top-1 error %.2f%%',
        record['epoch'], record['test']['top1_error'], record['dev_top1_error'],
      )  # fmt: skip
    if done % config.checkpoint_every_steps == 0 or done == total_steps:
      check_finite(state)
      ckpt.save(state)
  check_finite(state)
  ckpt.close()
  if not evals or evals[-1]['step'] != int(state.step):
    run_eval(state)

  best = min(evals, key=lambda e: (e['dev_top1_error'], -e['step']))
  results = {
    'dataset': config.dataset,
    'method': config.method,
    'data': data.summary,
    'split_sha256': data.digest,
    'train_class_counts': data.class_counts.tolist(),
    'steps': int(state.step),
    'last': evals[-1],
    'dev_selected': best,
    'conditional_weights': _weight_stats_table(state.weight_stats),
  }
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump(results, f, indent=2)
    figures.write_figures(results, workdir)
    writer.close()
  logging.info(
    'Final test top-1 error %.2f%% (last), %.2f%% (dev-selected, epoch %d).',
    results['last']['test']['top1_error'],
    best['test']['top1_error'],
    best['epoch'],
  )
  return results
