"""Whole CIFAR-10-LT training runs: wall time, step times, vectorized seeds.

Run from the repository root::

  python -m benchmarks.train_run                   # 200 epochs, ours_ce
  python -m benchmarks.train_run --epochs=4 --meta_epochs=2 --seeds=1,8
  python -m benchmarks.train_run --epochs=4 --meta_epochs=2 \
    --dtypes=float32,bfloat16

Each run is :func:`ltjax.train.train_and_evaluate` on a CIFAR-10-LT split
(imbalance ``--imbalance``), exactly as ``python -m ltjax.main`` runs it, in
a temporary workdir: data on the device, both stages (stage 2, the meta
stage of ``--method``, in the last ``--meta_epochs``), one evaluation at the
end, checkpoints only at the end. The data is the one of
``benchmarks/epoch.py``: ``--pool_per_class`` synthetic images per class
(speed does not depend on the pixels, so the test error of such a run means
nothing), or the real offline file with ``--data_dir``.

For every (dtype, number of seeds) the table gives the whole run's wall time
(compilation, evaluation and checkpoints included) and the median time per
step of each stage, from the trainer's own ``images_per_second`` log
(``metrics.jsonl``; the first logged interval of each stage, which holds its
compilation, is left out). With several ``--seeds`` counts it also gives
each one's step time against one seed's: N seeds run as one vmapped step.

The schedule is the config's ``epochs=<E>,meta_epochs=<M>`` variant: at 200
epochs with 40 meta epochs the official one (lr × 0.01 at epochs 160 and
180); other lengths drop the lr once, by × 0.01, when the meta stage starts
(:func:`ltjax.config_lib.shorten`).

With both ``--dtypes`` it also compares bfloat16 against float32 compute
(parameters, BatchNorm statistics and losses stay float32): the test error
of every seed, and the difference of the means against the seeds' spread.
On the real images (``--data_dir``) that is the accuracy check of bfloat16::

  python -m benchmarks.train_run --data_dir=../shared/data --epochs=15 \
    --meta_epochs=3 --seeds=2 --imbalance=10 --dtypes=float32,bfloat16
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

from benchmarks import cli, epoch, machine
from benchmarks.meta_step import MODELS


def parse_args(argv=None) -> argparse.Namespace:
  p, add = cli.parser(__doc__)

  def ints(text):
    try:
      values = [int(s) for s in text.split(',') if s]
    except ValueError:
      values = []
    if not values or min(values) < 1:
      raise argparse.ArgumentTypeError(f'positive integers, got {text!r}')
    return values

  add('method', default='ours_ce', help='a method of ltjax.methods.METHODS')
  add('epochs', type=int, default=200)
  add('meta_epochs', type=int, default=40, help='epochs of stage 2')
  add('seeds', type=ints, default=[1], help='e.g. 1,8: one run per count')
  add(
    'dtypes',
    type=cli.csv(('float32', 'bfloat16')),
    default=['float32'],
    help='float32,bfloat16',
  )
  add('model', choices=tuple(MODELS), default='resnet32')
  add('batch_size', type=int, default=100)
  add('dev_batch_size', type=int, default=100)
  add('imbalance', type=float, default=100.0)
  add('data_dir', default='', help='folder of cifar10_prefix_train.npz')
  add('pool_per_class', type=int, default=5000, help='synthetic, per class')
  add('image_size', type=int, default=32, help='synthetic images only')
  add('log_every_steps', type=int, default=20)
  args = p.parse_args(argv)
  if not 0 <= args.meta_epochs <= args.epochs or args.epochs < 1:
    p.error(
      f'need 0 <= --meta_epochs <= --epochs and --epochs >= 1, got '
      f'{args.meta_epochs} and {args.epochs}'
    )
  return args


def make_config(base, args, dtype, seeds):
  """``base`` (the ``epochs``/``meta_epochs`` variant of the config) with
  the run's dtype and seeds; one evaluation at the end, no checkpoints but
  the last."""
  config = base.copy_and_resolve_references()
  config.compute_dtype = dtype
  config.num_seeds = seeds
  config.eval_every_epochs = args.epochs
  config.log_every_steps = args.log_every_steps
  config.checkpoint_every_steps = 10**9
  return config


def stage_step_ms(rows, stage2_step, batch_size, seeds):
  """Median ms/step per stage from the trainer's images/s log."""
  out = {}
  for stage, keep in (
    (1, lambda s: s <= stage2_step),
    (2, lambda s: s > stage2_step),
  ):
    rates = [r['images_per_second'] for r in rows if keep(r['step'])]
    rates = rates[1:]  # the first interval of a stage holds its compilation
    if rates:
      out[stage] = 1e3 * batch_size * seeds / float(np.median(rates))
  return out


def one_run(base, args, dtype, seeds):
  from ltjax import summary, train

  config = make_config(base, args, dtype, seeds)
  with tempfile.TemporaryDirectory(prefix='ltjax_run_') as workdir:
    start = time.perf_counter()
    results = train.train_and_evaluate(config, workdir)
    wall = time.perf_counter() - start
    rows = [
      r
      for r in summary.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
      if 'images_per_second' in r
    ]
  steps_per_epoch = results['steps'] // args.epochs
  stage2_step = config.stage2_epoch * steps_per_epoch
  per_seed = [r['last']['test']['top1_error'] for r in results['seeds']]
  return {
    'wall': wall,
    'steps': results['steps'],
    'ms': stage_step_ms(rows, stage2_step, config.batch_size, seeds),
    'errors': per_seed,
    'data': results['data'],
  }


def fmt_ms(x):
  return '–' if x is None else f'{x:.{0 if x >= 100 else 1}f}'


def main(argv=None) -> str:
  args = parse_args(sys.argv[1:] if argv is None else list(argv))

  results = {}
  with tempfile.TemporaryDirectory(prefix='ltjax_data_') as data_dir:
    base = epoch.make_config(  # writes the synthetic data, if any
      args,
      data_dir,
      args.method,
      f'epochs={args.epochs},meta_epochs={args.meta_epochs}',
    )
    for dtype in args.dtypes:
      for seeds in args.seeds:
        print(f'run: {dtype}, {seeds} seed(s)', file=sys.stderr, flush=True)
        results[dtype, seeds] = one_run(base, args, dtype, seeds)

  rows = [
    '| compute | seeds | epochs (meta) | steps | wall s | stage 1 ms/step | '
    'stage 2 ms/step | step time vs 1 seed (stage 1 / 2) | test top-1 '
    'error (%) | per seed |',
    '|---|---:|---|---:|---:|---:|---:|---|---|---|',
  ]
  for (dtype, seeds), r in results.items():
    one = results.get((dtype, 1))
    ratio = '–'
    if one and seeds > 1:
      ratio = ' / '.join(
        f'{r["ms"][s] / one["ms"][s]:.2f}x'
        if s in r['ms'] and s in one['ms']
        else '–'
        for s in (1, 2)
      )
    rows.append(
      f'| {dtype} | {seeds} | {args.epochs} ({args.meta_epochs}) | '
      f'{r["steps"]} | {r["wall"]:.1f} | {fmt_ms(r["ms"].get(1))} | '
      f'{fmt_ms(r["ms"].get(2))} | {ratio} | {mean_std(r["errors"])} | '
      f'{", ".join(f"{e:.2f}" for e in r["errors"])} |'
    )
  source = (
    f'real images from {args.data_dir}'
    if args.data_dir
    else f'synthetic images, {args.pool_per_class} per class before the '
    'split (so the test error means nothing)'
  )
  first = next(iter(results.values()))
  text = '\n'.join(
    [
      f'{machine.header()}.',
      f'CIFAR-10-LT, imbalance {args.imbalance:g}, {source}: {first["data"]}. '
      f'Method {args.method}, model {args.model}, batch {args.batch_size}, dev '
      f'batch {args.dev_batch_size}. Wall: the whole train_and_evaluate '
      '(compilation, the final evaluation and checkpoint included). ms/step: '
      'median over logged intervals, the first of each stage left out.',
      '',
      *rows,
      *dtype_comparison(results),
    ]
  )
  print(text)
  return text


def mean_std(values) -> str:
  if len(values) == 1:
    return f'{values[0]:.2f}'
  return f'{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}'


def dtype_comparison(results) -> list[str]:
  """bfloat16 - float32 test error per seed count, against the spread."""
  out = []
  for (dtype, seeds), r in results.items():
    f32 = results.get(('float32', seeds))
    if dtype != 'bfloat16' or f32 is None:
      continue
    diff = np.mean(r['errors']) - np.mean(f32['errors'])
    spread = np.hypot(*(
      np.std(x['errors'], ddof=1) if seeds > 1 else 0.0 for x in (f32, r)
    ))  # fmt: skip
    out.append(
      f'\nbfloat16 - float32, {seeds} seed(s): {diff:+.2f} points (seed '
      f'spread combined {spread:.2f}); stage 2 step time '
      f"{r['ms'].get(2, np.nan) / f32['ms'].get(2, np.nan):.2f}x float32's."
    )
  return out


if __name__ == '__main__':
  main()
