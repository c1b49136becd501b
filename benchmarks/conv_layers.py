"""Per-layer convolution timings: ltjax formulations vs PyTorch, ResNet-32.

Run from the repository root::

  python -m benchmarks.conv_layers            # batch 100, 15 rounds
  python -m benchmarks.conv_layers --batch_size=2 --repeats=1  # smoke test

For every distinct 3x3 convolution of ResNet-32 (with its count in the
network), times the forward pass and forward + backward (input and filter
gradients) of :func:`ltjax.models.conv2d` under each ``--conv_impl`` and
``--xla_options`` (:func:`ltjax.models.xla_cpu_compiler_options` or XLA's
defaults), and of ``torch.nn.functional.conv2d`` (oneDNN) with autograd.
Rounds run every variant in turn; the table gives medians and, last, the
total over the network (time x count).

The conv inputs are plain arguments here, so this isolates the kernels (and
XLA's layout transposes of the filter gradient); the elementwise producers
that make ``conv_impl='lax'`` slow inside a ResNet are absent, so ``lax``
and ``cpu`` should time alike. Run as a script, PyTorch gets
``OMP_WAIT_POLICY=PASSIVE`` (unless set): otherwise its OpenMP threads keep
spinning after each call and slow the XLA call that follows.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import numpy as np

# (height = width, in channels, out channels, stride, count in ResNet-32)
LAYERS = [
  (32, 3, 16, 1, 1),
  (32, 16, 16, 1, 10),
  (32, 16, 32, 2, 1),
  (16, 32, 32, 1, 9),
  (16, 32, 64, 2, 1),
  (8, 64, 64, 1, 9),
]


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--batch_size', '--batch-size', type=int, default=100)
  p.add_argument('--repeats', type=int, default=15)
  p.add_argument('--conv_impl', '--conv-impl', default='cpu,lax')
  p.add_argument('--xla_options', '--xla-options', default='on,off')
  p.add_argument('--torch', type=lambda s: s.lower() in ('1', 'true'))
  p.set_defaults(torch=True)
  return p.parse_args(argv)


def jax_fns(b, h, cin, cout, stride, impl, options):
  import jax

  from ltjax import models

  kx, kw, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (b, h, h, cin))
  w = jax.random.normal(kw, (3, 3, cin, cout)) * 0.1
  g = jax.random.normal(kg, (b, h // stride, h // stride, cout))

  def conv(x, w):
    return models.conv2d(x, w, stride, 1, impl=impl)

  def both(x, w, g):
    return jax.vjp(conv, x, w)[1](g)

  fwd = jax.jit(conv).lower(x, w).compile(options)
  bwd = jax.jit(both).lower(x, w, g).compile(options)
  return (
    lambda: fwd(x, w).block_until_ready(),
    lambda: jax.block_until_ready(bwd(x, w, g)),
  )


def torch_fns(b, h, cin, cout, stride):
  import torch
  import torch.nn.functional as F

  torch.set_num_threads(os.cpu_count())
  gen = torch.Generator().manual_seed(0)
  x = torch.randn(b, cin, h, h, generator=gen, requires_grad=True)
  w = torch.randn(cout, cin, 3, 3, generator=gen) * 0.1
  w.requires_grad_()
  g = torch.randn(b, cout, h // stride, h // stride, generator=gen)

  def fwd():
    with torch.no_grad():
      F.conv2d(x, w, stride=stride, padding=1)

  def bwd():
    y = F.conv2d(x, w, stride=stride, padding=1)
    torch.autograd.grad(y, (x, w), g)

  return fwd, bwd


def main(argv=None) -> str:
  args = parse_args(argv)
  import jax

  from ltjax import models

  variants = [
    (f'ltjax {impl}, xla_options={o}', impl, o)
    for impl in args.conv_impl.split(',')
    for o in args.xla_options.split(',')
  ]
  options = {'on': models.xla_cpu_compiler_options(), 'off': {}}
  fns = {}
  for layer in LAYERS:
    shape = (args.batch_size, *layer[:4])
    for name, impl, o in variants:
      fns[(layer, name)] = jax_fns(*shape, impl, options[o])
    if args.torch:
      fns[(layer, 'torch')] = torch_fns(*shape)
  times = {(k, i): [] for k in fns for i in range(2)}
  for r in range(args.repeats + 1):  # round 0 warms up
    for key, pair in fns.items():
      for i, fn in enumerate(pair):
        start = time.perf_counter()
        fn()
        if r:
          times[(key, i)].append(time.perf_counter() - start)
  med = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
  names = [v[0] for v in variants] + (['torch'] if args.torch else [])
  lines = [
    f'{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; '
    f'{os.cpu_count()} CPUs; jax {jax.__version__}'
    + (f', torch {sys.modules["torch"].__version__}' if args.torch else '')
    + f'; batch {args.batch_size}; median of {args.repeats} rounds; '
    f'ms forward / forward+backward; xla_options=on is {options["on"]}.',
    '',
    '| conv (HxW, in->out, stride) | count | ' + ' | '.join(names) + ' |',
    '|---|---:|' + '---:|' * len(names),
  ]
  totals = {n: [0.0, 0.0] for n in names}
  for layer in LAYERS:
    h, cin, cout, stride, count = layer
    cells = []
    for n in names:
      f, b = med[((layer, n), 0)], med[((layer, n), 1)]
      totals[n][0] += count * f
      totals[n][1] += count * b
      cells.append(f'{f:.1f} / {b:.1f}')
    lines.append(
      f'| {h}x{h}, {cin}->{cout}, s{stride} | {count} | '
      + ' | '.join(cells)
      + ' |'
    )
  lines.append(
    '| ResNet-32 total | 31 | '
    + ' | '.join(f'{t[0]:.0f} / {t[1]:.0f}' for t in totals.values())
    + ' |'
  )
  text = '\n'.join(lines)
  print(text)
  return text


if __name__ == '__main__':
  os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # before torch loads
  main()
