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
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ltjax import evaluate, figures, methods, models, summary
from ltjax import input_pipeline as inputs
from ltjax.checkpoint import Checkpointer, step_of

# Fields that may change between a run and its resumption.
RESUMABLE_FIELDS = (
  'log_every_steps',
  'checkpoint_every_steps',
  'keep_checkpoints',
)

COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}

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
    num_classes=num_classes,
    cosine_head=method.loss == 'ldam',
    dtype=COMPUTE_DTYPES[config.compute_dtype],
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
  if config.compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(
      f'config.compute_dtype must be one of {sorted(COMPUTE_DTYPES)}, got '
      f'{config.compute_dtype!r}.'
    )
  if config.num_seeds < 1:
    raise ValueError(f'config.num_seeds must be >= 1, got {config.num_seeds}.')
  if config.num_seeds > 1 and config.dataset in inputs.LARGE_DATASETS:
    raise ValueError(
      f'config.num_seeds={config.num_seeds}: vectorized seeds need an array '
      f'dataset kept on the device (CIFAR or npz), not {config.dataset}.'
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


def _eval_row(records) -> dict:
  """One line of ``evals.jsonl``: a record, or the records of every seed."""
  if len(records) == 1:
    return records[0]
  step, epoch = records[0]['step'], records[0]['epoch']
  seeds = [{k: r[k] for k in ('dev_top1_error', 'test')} for r in records]
  return {'step': step, 'epoch': epoch, 'seeds': seeds}


def _eval_records(row) -> list[dict]:
  if 'seeds' not in row:
    return [row]
  return [
    {'step': row['step'], 'epoch': row['epoch'], **r} for r in row['seeds']
  ]


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
  num_seeds = config.num_seeds
  init = functools.partial(
    methods.init_state,
    model,
    config,
    data.num_classes,
    data.image_shape,
    steps_per_epoch,
  )
  key = jax.random.key(config.seed)
  if num_seeds == 1:
    k_init, k_train, k_dev = jax.random.split(key, 3)
  else:  # seed s of the run: keys from fold_in(key, s)
    seed_keys = jax.vmap(lambda s: jax.random.fold_in(key, s))(
      jnp.arange(num_seeds)
    )
    split = jax.vmap(lambda k: jax.random.split(k, 3))(seed_keys)
    k_init, k_train, k_dev = split[:, 0], split[:, 1], split[:, 2]
    init = jax.vmap(init)
  state = jax.jit(init, out_shardings=replicated)(k_init)

  ckpt = Checkpointer(workdir, config.keep_checkpoints)
  if ckpt.latest_step() is not None:
    state = ckpt.restore_latest(state)
    logging.info('Resumed from the checkpoint at step %d.', step_of(state))
  start_step = step_of(state)

  is_meta = {
    k: stage in methods.META_STAGES
    for k, stage in ((1, method.stage1), (2, method.stage2))
  }
  meta_start = 0 if is_meta[1] else (stage2_step if is_meta[2] else None)

  def make_step(stage):
    update = methods.make_update_fn(
      stage, model, method, config, data.class_counts, steps_per_epoch
    )
    return data.make_train_step(
      update, k_train, k_dev, start_step, meta_start, num_seeds
    )

  steps = {1: make_step(method.stage1)}
  steps[2] = (
    steps[1] if method.stage2 == method.stage1 else make_step(method.stage2)
  )

  def apply_fn(params, batch_stats, images):
    variables = {'params': params, 'batch_stats': batch_stats}
    return model.apply(variables, images, train=False)

  predict = data.make_predict(apply_fn, num_seeds)
  # The calibration error reads the probabilities the loss trains: LDAM's
  # cosine head is scaled by s before its softmax.
  logit_scale = config.ldam_scale if method.loss == 'ldam' else 1.0
  writer = None
  if jax.process_index() == 0:
    writer = summary.MetricWriter(workdir, resume_step=start_step)
  evals_path = os.path.join(workdir, 'evals.jsonl')
  evals = []
  if os.path.exists(evals_path):
    evals = [
      _eval_records(e)
      for e in summary.read_jsonl(evals_path)
      if e['step'] <= start_step
    ]

  def run_eval(state):
    """Evaluates every seed; appends ``[record per seed]`` to ``evals``."""
    test_logits, test_labels = predict(state, 'test')
    dev_logits, dev_labels = predict(state, 'dev')
    if num_seeds == 1:
      test_logits, dev_logits = test_logits[None], dev_logits[None]
    step = step_of(state)
    records = [
      {
        'step': step,
        'epoch': step // steps_per_epoch,
        'dev_top1_error': evaluate.classification_metrics(
          dev, dev_labels, data.class_counts
        )['top1_error'],
        'test': evaluate.classification_metrics(
          test, test_labels, data.class_counts, logit_scale
        ),
      }
      for test, dev in zip(test_logits, dev_logits, strict=True)
    ]
    evals.append(records)
    if jax.process_index() == 0:
      with open(evals_path + '.tmp', 'w') as f:
        f.writelines(json.dumps(_eval_row(r)) + '\n' for r in evals)
      os.replace(evals_path + '.tmp', evals_path)
      writer.write(
        step,
        {
          'dev/top1_error': np.mean([r['dev_top1_error'] for r in records]),
          'test/top1_error': np.mean(
            [r['test']['top1_error'] for r in records]
          ),
        },
      )
    return records

  def check_finite(state):
    bad = np.asarray(jax.device_get(state.first_bad_step))
    bad = int(bad[bad >= 0].min()) if np.any(bad >= 0) else -1
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
      images = config.batch_size * num_seeds
      rate = (done - step_last) * images / (now - t_last)
      scalars = {
        k: float(np.mean(v)) for k, v in jax.device_get(metrics).items()
      }
      scalars['images_per_second'] = rate
      eta = (total_steps - done) * images / rate
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
      records = run_eval(state)
      logging.info(
        'epoch %d: test top-1 error %s%%, dev top-1 error %s%%',
        records[0]['epoch'],
        ' '.join(f'{r["test"]["top1_error"]:.2f}' for r in records),
        ' '.join(f'{r["dev_top1_error"]:.2f}' for r in records),
      )
    if done % config.checkpoint_every_steps == 0 or done == total_steps:
      check_finite(state)
      ckpt.save(state)
  check_finite(state)
  ckpt.close()
  if not evals or evals[-1][0]['step'] != step_of(state):
    run_eval(state)

  # Per seed: the last model and the one the dev set selects.
  per_seed = [
    {
      'last': evals[-1][s],
      'dev_selected': min(
        (e[s] for e in evals), key=lambda r: (r['dev_top1_error'], -r['step'])
      ),
    }
    for s in range(num_seeds)
  ]
  weight_stats = np.asarray(state.weight_stats)
  results = {
    'dataset': config.dataset,
    'method': config.method,
    'data': data.summary,
    'split_sha256': data.digest,
    'train_class_counts': data.class_counts.tolist(),
    'steps': step_of(state),
    **per_seed[0],
    'conditional_weights': _weight_stats_table(
      weight_stats.sum(0) if num_seeds > 1 else weight_stats
    ),
  }
  if num_seeds > 1:
    results['seeds'] = per_seed
    results['over_seeds'] = evaluate.summarize_seeds(per_seed)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump(results, f, indent=2)
    figures.write_figures(results, workdir)
    writer.close()
  for i, r in enumerate(per_seed):
    logging.info(
      'Seed %d: final test top-1 error %.2f%% (last), %.2f%% (dev-selected, '
      'epoch %d).',
      i,
      r['last']['test']['top1_error'],
      r['dev_selected']['test']['top1_error'],
      r['dev_selected']['epoch'],
    )
  return results
