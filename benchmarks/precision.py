"""bfloat16 against float32 compute: test error after a short training run.

Run: ``python -m benchmarks.precision --data_dir=../shared/data``.

Trains the paper's method (``ours_ce``) on the offline CIFAR-10 images
(``configs/cifar10_lt.py:source=npz`` at ``--imbalance``, default 100; 100
images per class held out as the test set) for ``--epochs`` epochs, the meta
stage in the last ``--meta_epochs``, with ``--seeds`` vectorized seeds, once
in float32 and once with ``compute_dtype='bfloat16'`` (parameters, BatchNorm
statistics and losses stay float32). Prints the test top-1 error of each
seed and their mean and standard deviation, with the machine and the date.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import tempfile
import time

import jax
import numpy as np

from benchmarks import machine, train_run

REPO = pathlib.Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data_dir', required=True)
  parser.add_argument('--epochs', type=int, default=15)
  parser.add_argument('--meta_epochs', type=int, default=5)
  parser.add_argument('--seeds', type=int, default=3)
  parser.add_argument('--model', default='resnet32')
  parser.add_argument('--imbalance', type=float, default=100.0)
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)

  from ltjax import config_lib, train

  rows = []
  for dtype in ('float32', 'bfloat16'):
    config = config_lib.from_file(
      REPO / 'configs' / 'cifar10_lt.py',
      f'source=npz,method=ours_ce,imb={args.imbalance:g}',
    )
    config.data.dir = args.data_dir
    config.model = args.model
    config.compute_dtype = dtype
    config.num_seeds = args.seeds
    train_run.shorten(config, args.epochs, args.meta_epochs)
    config.log_every_steps = 10**9
    with tempfile.TemporaryDirectory() as workdir:
      start = time.perf_counter()
      results = train.train_and_evaluate(config, os.path.join(workdir, dtype))
      seconds = time.perf_counter() - start
    if args.seeds > 1:
      top1 = results['over_seeds']['last']['top1_error']
      values, mean, std = top1['values'], top1['mean'], top1['std']
    else:
      values = [results['last']['test']['top1_error']]
      mean, std = values[0], 0.0
    rows.append((dtype, values, mean, std, seconds))

  print(
    f'{datetime.date.today().isoformat()}, {machine.cpu_model()}'
    f' ({os.cpu_count()} CPUs), JAX {jax.__version__} on '
    f'{jax.devices()[0].device_kind}; {args.model}, {args.epochs} epochs '
    f'({args.meta_epochs} meta), {args.seeds} seeds, offline CIFAR-10 file, '
    f'imbalance {args.imbalance:g}, 1,000 test images.\n'
  )
  print('| compute | test top-1 error per seed (%) | mean ± std (%) | wall s |')
  print('|---|---|---:|---:|')
  for dtype, values, mean, std, seconds in rows:
    per = ', '.join(f'{v:.2f}' for v in values)
    print(f'| {dtype} | {per} | {mean:.2f} ± {std:.2f} | {seconds:.0f} |')
  diff = rows[1][2] - rows[0][2]
  spread = np.hypot(rows[0][3], rows[1][3])
  print(
    f'\nbfloat16 - float32: {diff:+.2f} points (seed spread combined '
    f'{spread:.2f}).'
  )


if __name__ == '__main__':
  main()
