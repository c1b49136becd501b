r"""CIFAR-10-LT on the real offline images: a grid of runs, and RESULTS.md.

Run from the repository root::

  python -m experiments.reproduce --data_dir=../shared/data \
    --workdir=runs/reproduce                 # the whole grid, in order
  python -m experiments.reproduce --data_dir=../shared/data \
    --workdir=runs/reproduce --grids=imb100 --only=ce,ours_ce
  python -m experiments.reproduce --summarize  # RESULTS.md from results/

Every run is ``configs/cifar10_lt.py:source=npz,method=<m>,imb=<IF>`` (the
official 200-epoch schedule) through :func:`ltjax.train.train_and_evaluate`,
in its own workdir under ``--workdir``. A run whose summary is in
``--results_dir`` is skipped; an interrupted one resumes from its
checkpoints, so the grid can be run in pieces. Each finished run writes a
small JSON summary to ``--results_dir`` (commit it), and RESULTS.md is
regenerated from those summaries alone.

Shared stage 1. Methods whose stage 1 is plain training with the same loss
(ce, cb_finetune, ours_ce and its variants, crt, lws, tau_norm,
la_posthoc; focal, ours_focal; ldam, ldam_drw, ours_ldam; la, ours_la) run
identical updates on identical batches for the first ``stage2_epoch``
epochs: batches are a function of ``(seed, step)``
and the learning rate of the epoch alone. The stage-1 prefix is trained once
(``num_epochs = stage2_epoch``, ``method`` = the plain method of that loss)
and its checkpoint, evaluations and logs are copied into each method's
workdir, which then resumes into its own stage 2. A test checks that this
gives bit-identical parameters and results to a run from scratch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time

import numpy as np

from benchmarks import cli, machine
from experiments import results_md
from experiments.grid import GRIDS, Run


def parse_args(argv=None):
  p, add = cli.parser(__doc__)
  add('workdir', default='runs/reproduce', help='one folder per run below it')
  add('data_dir', default='', help='folder of cifar10_prefix_train.npz')
  add('results_dir', default=os.path.join(cli.REPO, 'results'))
  add('results_md', default=os.path.join(cli.REPO, 'RESULTS.md'))
  add('grids', type=cli.csv(tuple(GRIDS)), default=list(GRIDS))
  add('only', default='', help='comma-separated run names or methods')
  add(
    'set',
    action='append',
    default=[],
    metavar='FIELD=VALUE',
    help='override a config field in every run (e.g. model=tiny, for tests)',
  )
  add('summarize', action='store_true', help='only regenerate RESULTS.md')
  args = p.parse_args(argv)
  if not args.summarize and not args.data_dir:
    p.error('--data_dir is required to train (the folder of the npz file)')
  return args


def _literal(text):
  import ast

  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def make_config(run: Run, data_dir: str, sets=()):
  """The ``train_and_evaluate`` config of ``run`` (``sets``: ``'k=v'``)."""
  from ltjax import config_lib

  config = config_lib.from_file(
    cli.CIFAR_CONFIG, f'source=npz,method={run.method},imb={run.imbalance}'
  )
  config.data.dir = os.path.abspath(data_dir)
  config.num_seeds = run.seeds
  config.seed = run.seed
  for field, value in (*run.overrides, *(s.split('=', 1) for s in sets)):
    value = _literal(value) if isinstance(value, str) else value
    if isinstance(config[field], float) and isinstance(value, int):
      value = float(value)
    config[field] = value
  return config


def stage1_prefix(config):
  """``(name, config)`` of the shared stage-1 prefix, or None if unshared."""
  from ltjax import config_lib, methods

  method = methods.get_method(config.method)
  plain = methods.METHODS.get(method.loss)  # the loss's own plain method
  if (
    plain is None
    or (plain.stage1, plain.stage2) != (method.stage1, method.stage1)
    or not 0 < config.stage2_epoch < config.num_epochs
    or config.stage2_epoch % config.eval_every_epochs
  ):
    return None
  prefix = config.copy_and_resolve_references()
  prefix.method = method.loss  # 'ce', 'focal', 'ldam', 'la': plain twice
  defaults = config_lib.method_defaults(prefix.method)
  # Fields only a stage reads (the stage tables' hyperparameters) take their
  # defaults in the plain prefix, so variants of them share it.
  for field in methods.stage_fields():
    prefix[field] = defaults[field]
  prefix.num_epochs = config.stage2_epoch
  # Drops after the prefix's end change none of its learning rates.
  prefix.lr_boundaries = tuple(
    b for b in config.lr_boundaries if b <= prefix.num_epochs
  )
  tag = Run(prefix.method, 0, config.num_seeds, seed=config.seed).seed_tag
  return f'_stage1_{prefix.method}{tag}', prefix


def _git_commit() -> str:
  from ltjax import provenance

  return provenance.git_commit(cli.REPO)


def _timed_train(config, workdir) -> dict:
  """Trains (or resumes) in ``workdir``; wall seconds add up in
  ``workdir/wall.json`` over interrupted calls."""
  from ltjax import train

  path = os.path.join(workdir, 'wall.json')
  before = 0.0
  if os.path.exists(path):
    with open(path) as f:
      before = json.load(f)['seconds']
  start = time.perf_counter()
  results = train.train_and_evaluate(config, workdir)
  seconds = before + time.perf_counter() - start
  with open(path, 'w') as f:
    json.dump({'seconds': seconds}, f)
  return results, seconds


def _fork(prefix_dir, workdir) -> None:
  """Copies a finished prefix's checkpoints, evaluations and logs."""
  os.makedirs(workdir, exist_ok=True)
  for name in ('checkpoints', 'tensorboard'):
    shutil.copytree(os.path.join(prefix_dir, name), os.path.join(workdir, name))
  for name in ('evals.jsonl', 'metrics.jsonl'):
    shutil.copy2(os.path.join(prefix_dir, name), workdir)


def train_run(run: Run, args) -> dict:
  """Trains ``run`` (sharing its stage-1 prefix) and returns its summary."""
  config = make_config(run, args.data_dir, args.set)
  root = os.path.join(args.workdir, f'imb{run.imbalance}')
  workdir = os.path.join(root, run.name)
  shared = stage1_prefix(config)
  stage1_seconds = 0.0
  if shared and not os.path.exists(os.path.join(workdir, 'checkpoints')):
    prefix_name, prefix_config = shared
    prefix_dir = os.path.join(root, prefix_name)
    print(f'[reproduce] stage 1 of {run.name}: {prefix_dir}', flush=True)
    if os.path.exists(os.path.join(prefix_dir, 'results.json')):
      with open(os.path.join(prefix_dir, 'wall.json')) as f:
        stage1_seconds = json.load(f)['seconds']  # trained already
    else:
      _, stage1_seconds = _timed_train(prefix_config, prefix_dir)
    _fork(prefix_dir, workdir)
    with open(os.path.join(workdir, 'stage1.json'), 'w') as f:
      json.dump({'prefix': prefix_name, 'seconds': stage1_seconds}, f)
  elif shared:
    with open(os.path.join(workdir, 'stage1.json')) as f:
      stage1_seconds = json.load(f)['seconds']
  print(f'[reproduce] {run.name}: {workdir}', flush=True)
  results, seconds = _timed_train(config, workdir)
  out = summarize_run(run, config, results, seconds, stage1_seconds, shared)
  stage1 = stage1_evals(workdir, config)
  if stage1:  # else results_md pairs by processor, as for older summaries
    for record, evals in zip(out['seeds'], stage1, strict=True):
      record['stage1'] = evals
  return out


def stage1_evals(workdir, config) -> list[list[list[float]]]:
  """Per seed, ``[epoch, dev error, test error, test ECE]`` of each
  evaluation in ``workdir`` up to ``config.stage2_epoch``: the fingerprint
  of the stage 1 a run continued (``[]`` when none ran). Two forks share
  a stage 1 where these agree; two stage-1 runs that differ only by float
  rounding (another processor, or code that sums in another order) differ
  here, in the ECE if nowhere else."""
  from ltjax import evaluate, summary

  rows = summary.read_jsonl(os.path.join(workdir, 'evals.jsonl'))
  evals = [
    evaluate.row_records(r) for r in rows if r['epoch'] <= config.stage2_epoch
  ]
  return [
    [
      [e[s]['epoch'], e[s]['dev_top1_error'], e[s]['test']['top1_error'],
       e[s]['test']['ece']]
      for e in evals
    ]
    for s in range(len(evals[-1]) if evals else 0)
  ]  # fmt: skip


def _record(r: dict) -> dict:
  test = r['test']
  keys = ('top1_error', 'top3_error', 'top5_error', 'many_shot_accuracy',
          'medium_shot_accuracy', 'few_shot_accuracy', 'ece',
          'per_class_accuracy')  # fmt: skip
  extra = {'posthoc_tau': r['posthoc_tau']} if 'posthoc_tau' in r else {}
  return {
    'epoch': r['epoch'],
    'dev_top1_error': r['dev_top1_error'],
    **{k: test.get(k) for k in keys},
    **extra,
  }


def _identity(run, config) -> dict:
  """What names a run in its summary: the cell and its exact command."""
  return {
    'name': run.name,
    'method': run.method,
    'imbalance': run.imbalance,
    'num_seeds': run.seeds,
    'seed': run.seed,
    'overrides': dict(run.overrides),
    'command': ' '.join(
      ['python -m ltjax.main', run.variant]
      + [f"'--config.{s}'" for s in config_overrides_of(run, config)]
      + ['--config.data.dir=DATA_DIR --workdir=WORKDIR']
    ),
  }


def summarize_run(run, config, results, seconds, stage1_seconds, shared):
  per_seed = results['seeds']
  cw = results['conditional_weights']
  eps_rms = np.sqrt(np.square(cw['eps_std']) + np.square(cw['eps_mean']))
  return {
    **_identity(run, config),
    'schedule': {k: config[k] for k in SCHEDULE_FIELDS},
    'pool_class_counts': pool_class_counts(config),
    'dev_per_class': config.data.dev_per_class,
    'test_per_class': config.data.test_per_class,
    'commit': _git_commit(),
    'split_sha256': results['split_sha256'],
    'data': results['data'],
    'train_class_counts': results['train_class_counts'],
    'machine': machine.header(),
    'wall_seconds': seconds + stage1_seconds,
    'stage1_shared': shared[0] if shared else None,
    'seeds': [
      {'last': _record(s['last']), 'dev_selected': _record(s['dev_selected'])}
      for s in per_seed
    ],
    'eps_mean': cw['eps_mean'],
    'eps_rms': eps_rms.tolist(),
    'weight_mean': cw['weight_mean'],
    'meta_examples': cw['count'],
  }


def stopped_summary(run, args, error) -> dict:
  """The summary of a run that stopped on a non-finite loss: a result of
  its settings (rerunning gives the same), recorded so the grid goes on."""
  config = make_config(run, args.data_dir, args.set)
  return {
    **_identity(run, config),
    'commit': _git_commit(),
    'machine': machine.header(),
    # The message names the run's folder: WORKDIR, as in 'command'.
    'stopped': str(error).replace(
      os.path.join(os.path.abspath(args.workdir), f'imb{run.imbalance}'),
      'WORKDIR',
    ),
  }


SCHEDULE_FIELDS = ('model', 'num_epochs', 'stage2_epoch', 'learning_rate',
                   'lr_boundaries', 'lr_decay', 'warmup_epochs', 'batch_size',
                   'dev_batch_size', 'eval_every_epochs')  # fmt: skip


def pool_class_counts(config) -> list[int]:
  """Images per class left for the long-tailed subsampling: the training
  file's counts less the carved test and dev images."""
  from ltjax.data import arrays

  path = os.path.join(config.data.dir, config.data.train_file)
  counts = np.bincount(arrays.load_npz(path).label)
  held = config.data.test_per_class + config.data.dev_per_class
  return (counts - held).tolist()


def config_overrides_of(run, config):
  """Fields where ``config`` differs from the run's plain variant (the
  ``--set`` overrides of a test grid), as ``'field=value'``."""
  plain = make_config(dataclasses.replace(run, overrides=()), '')
  a, b = config.to_dict(), plain.to_dict()
  for k in sorted(a):
    if k not in ('data', 'num_seeds') and a[k] != b.get(k):
      if k not in dict(run.overrides):
        yield f'{k}={a[k]}'


def summary_path(results_dir, run: Run) -> str:
  return os.path.join(results_dir, f'imb{run.imbalance}', f'{run.name}.json')


def selected(runs: list[Run], only: str) -> list[Run]:
  if not only:
    return runs
  keep = set(only.split(','))
  return [r for r in runs if r.name in keep or r.method in keep]


def main(argv=None) -> None:
  args = parse_args(sys.argv[1:] if argv is None else list(argv))
  if not args.summarize:
    runs = [r for g in args.grids for r in selected(GRIDS[g], args.only)]
    for i, run in enumerate(runs):
      path = summary_path(args.results_dir, run)
      if os.path.exists(path):
        print(f'[reproduce] {i + 1}/{len(runs)} {run.name}: done, skipped')
        continue
      print(f'[reproduce] {i + 1}/{len(runs)} {run.name}', flush=True)
      try:
        summary = train_run(run, args)
      except FloatingPointError as error:  # the trainer's non-finite stop
        print(f'[reproduce] {run.name} stopped: {error}', flush=True)
        summary = stopped_summary(run, args, error)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path + '.tmp', 'w') as f:
        json.dump(summary, f, indent=1)
      os.replace(path + '.tmp', path)
  text = results_md.write(args.results_dir, args.results_md)
  print(f'[reproduce] wrote {args.results_md} ({len(text)} characters)')


if __name__ == '__main__':
  main()
