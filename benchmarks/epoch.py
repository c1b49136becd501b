"""ltjax vs the official PyTorch code: CIFAR-10-LT epochs, input included.

Run from the repository root::

  python -m benchmarks.epoch                     # ResNet-32, IF 100, batch 100
  python -m benchmarks.epoch --stages=meta --steps=20   # a partial epoch
  python -m benchmarks.epoch --data_dir=../shared/data  # the real offline file
  python -m benchmarks.epoch --model=tiny --steps=2 --batch_size=4 \
    --dev_batch_size=4 --pool_per_class=120 --image_size=8  # smoke test

Data: by default a synthetic CIFAR-10 training set (``--pool_per_class``
random uint8 images per class; speed does not depend on the pixels), written
to a temporary ``.npz`` and read through the ``npz`` variant of
``configs/cifar10_lt.py``, so that ltjax's own split
(:func:`ltjax.data.long_tail_split`) carves the balanced dev set (10 per
class) first and then subsamples the rest to the exponential profile with
the official ``n_max = (N - 10 C) / C``: 12,380 training images, 4990 ... 49
per class, at imbalance 100. ``--data_dir`` reads the real
``cifar10_prefix_train.npz`` from that folder instead (the config's offline
variant: a subset, so a smaller epoch). Both implementations train on the
same train and dev index sets.

- ``ce``: an epoch of plain cross-entropy steps (SGD, momentum 0.9,
  Nesterov, weight decay 5e-4, lr 0.1 as the first stage of the official
  schedule).
- ``meta``: an epoch of meta steps (Algorithm 1 of Jamal et al., CVPR 2020)
  as the first epoch of the second stage (lr 1e-3 = 0.1 x 0.01), each with a
  fresh dev batch drawn from the dev set with the training augmentation.

ltjax: the trainer's own path (as :func:`ltjax.train.train_and_evaluate`):
:class:`ltjax.inputs.DeviceInput` keeps the split on the device and the
step of :func:`ltjax.train.make_stage_steps` gathers, augments
(:mod:`ltjax.data.device_pipeline`) and runs the update of
:func:`ltjax.train_step.make_update_fn` (stage ``plain`` of method ``ce``;
stage ``ours`` of method ``ours_ce``) in one jitted, donated step. The first call compiles and runs one step, untimed; its compile time
(JAX's trace, lowering and XLA compile events) is reported apart. The epoch
then starts from a fresh state and ends when its last state is ready; every
``--log_every`` steps it waits for the step for the progress line (stderr).

PyTorch (:mod:`benchmarks.torch_epoch`): as the official code
(``C-LT/main.py``, ``data_utils.py``): a
``Dataset`` over the uint8 HWC arrays turns each image into a PIL image and
applies the official ``ToTensor``, reflect pad 4, ``ToPILImage``,
``RandomCrop(32)``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``
(written here with PIL and torch, the same operations as torchvision's); a
``DataLoader(shuffle=True, num_workers=--workers)`` (the official code uses
1 worker; the last partial batch is kept, while ltjax drops it), and for
meta steps ``next(iter(dev_loader))`` every step, which starts a fresh
iterator (and its worker processes) each time as the official code does
(``--workers=0`` transforms in the main process instead, under torch's
intra-op threads: on a busy 2-CPU machine that was 35x slower per image). CE
step: forward, backward, ``optimizer.step()``; meta step:
``official_meta_step`` of ``benchmarks/torch_reference.py`` (a fresh model loaded
with ``load_state_dict``, ``create_graph=True``). One untimed step first;
the epoch then runs on a fresh model, from starting the loader's iterator
(and its workers) to the end of the last step.

The epochs run one after another in this process (every ltjax stage, then
every PyTorch stage, ``--pause`` idle seconds before each), not interleaved:
a noisy shared machine can favour either. PyTorch uses ``--threads`` threads
(all CPUs by default), JAX all CPUs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import PIL

from benchmarks import cli, machine
from benchmarks.meta_step import MODELS

STAGES = ('ce', 'meta')
IMPLS = ('ltjax', 'torch')
METHOD = {'ce': 'ce', 'meta': 'ours_ce'}  # ltjax method of each stage
NUM_CLASSES = 10
COMPILE_EVENTS = (
  '/jax/core/compile/jaxpr_trace_duration',
  '/jax/core/compile/jaxpr_to_mlir_module_duration',
  '/jax/core/compile/backend_compile_duration',
)


def parse_args(argv=None) -> argparse.Namespace:
  p, add = cli.parser(__doc__)

  add('stages', type=cli.csv(STAGES), default=list(STAGES), help='ce,meta')
  add('impls', type=cli.csv(IMPLS), default=list(IMPLS), help='ltjax,torch')
  add('steps', type=int, default=0, help='steps per epoch; 0: a full epoch')
  add('batch_size', type=int, default=100)
  add('dev_batch_size', type=int, default=100)
  add('model', choices=tuple(MODELS), default='resnet32')
  add('imbalance', type=float, default=100.0)
  add(
    'data_dir',
    default='',
    help='folder of cifar10_prefix_train.npz (real images); empty: synthetic',
  )
  add(
    'pool_per_class',
    type=int,
    default=5000,
    help='synthetic images per class before the split (CIFAR-10: 5000)',
  )
  add('image_size', type=int, default=32, help='synthetic images only')
  add('workers', type=int, default=1, help='DataLoader workers (official: 1)')
  add('threads', type=int, default=0, help='torch threads; 0: all CPUs')
  cli.add_torch_device(add)
  add('pause', type=float, default=1.0, help='idle seconds before each epoch')
  add('log_every', type=int, default=10, help='progress to stderr; 0: none')
  return p.parse_args(argv)


# --- Data: one config, one split, both sides ---------------------------------


def make_config(args, workdir, method='ce', variant=''):
  """The ``npz`` variant of configs/cifar10_lt.py over the benchmark's data
  (and ``variant``, more ``key=value`` variants of the config).

  Without ``--data_dir`` writes a synthetic training set (and a one-image-
  per-class test set, never read) to ``workdir``.
  """
  from ltjax import config_lib

  config = config_lib.from_file(
    cli.CIFAR_CONFIG,
    ','.join(
      filter(
        None, [f'method={method},imb={args.imbalance:g},source=npz', variant]
      )
    ),
  )
  config.model = args.model
  config.batch_size = args.batch_size
  config.dev_batch_size = args.dev_batch_size
  if args.data_dir:
    config.data.dir = args.data_dir
    return config
  rng = np.random.default_rng(0)
  shape = (args.image_size, args.image_size, 3)
  for name, per_class in (('train', args.pool_per_class), ('test', 1)):
    label = np.tile(np.arange(NUM_CLASSES, dtype=np.int32), per_class)
    image = rng.integers(0, 256, (len(label), *shape), np.uint8)
    np.savez(os.path.join(workdir, f'{name}.npz'), image=image, label=label)
  config.data.dir = workdir
  config.data.train_file, config.data.test_file = 'train.npz', 'test.npz'
  config.data.test_per_class = 0
  return config


def stage_lr(config, steps_per_epoch, stage):
  """lr of the stage's first epoch in the trainer's schedule."""
  from ltjax import train_step

  return float(
    train_step.learning_rate_fn(config, steps_per_epoch)(
      first_step(config, steps_per_epoch, stage)
    )
  )


def first_step(config, steps_per_epoch, stage):
  return 0 if stage == 'ce' else config.stage2_epoch * steps_per_epoch


# --- ltjax: the trainer's input and update -------------------------------------


class _CompileClock:
  """Counts and times JAX compilations while active (jax.monitoring)."""

  def __init__(self):
    self.count, self.seconds = 0, 0.0

  def __call__(self, event, duration, **kwargs):
    del kwargs
    if event in COMPILE_EVENTS:
      self.seconds += duration
      self.count += event == COMPILE_EVENTS[-1]

  def __enter__(self):
    import jax

    jax.monitoring.register_event_duration_secs_listener(self)
    return self

  def __exit__(self, *exc):
    import jax

    jax.monitoring.unregister_event_duration_listener(self)


def ltjax_epochs(args, config, data) -> dict:
  """{stage: result} for ``data``, a :class:`DeviceInput` of ``config``."""
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from ltjax import devices, methods, train

  # The trainer's own pieces: keys, a replicated state, the stage's step.
  mesh = devices.make_mesh()
  k_init, k_train, k_dev = train.seed_keys(config)
  spe = data.steps_per_epoch
  out = {}
  for stage in args.stages:
    cfg = config.copy_and_resolve_references()
    cfg.method = METHOD[stage]
    method = methods.get_method(cfg.method)
    model = train.create_model(cfg, data.num_classes, method)
    start = first_step(cfg, spe, stage)
    make_state = train.make_init_fn(cfg, model, data, mesh)

    def init(key, make_state=make_state, start=start):
      state = make_state(key)  # replicated, as every state the step returns
      step = jnp.full_like(state.step, start)  # the step of every seed
      return state.replace(step=jax.device_put(step, NamedSharding(mesh, P())))

    step = train.make_stage_steps(cfg, model, method, data)[
      1 if stage == 'ce' else 2
    ]
    meta_start = train.meta_start_step(method, cfg.stage2_epoch * spe)
    feeds = data.train_feeds(k_train, k_dev, start, meta_start)
    n = min(args.steps, spe) if args.steps else spe
    label = f'ltjax {stage}'

    cli.log(f'{label}: compiling')
    state = jax.block_until_ready(init(k_init))
    with _CompileClock() as clock:
      t0 = time.perf_counter()
      state, metrics = step(state, next(feeds))
      jax.block_until_ready((state, metrics))
      first = time.perf_counter() - t0
    del state, metrics

    state = jax.block_until_ready(init(k_init))
    time.sleep(args.pause)
    cli.log(f'{label}: {n} steps of {args.batch_size}')
    with _CompileClock() as recompiles:
      t0 = time.perf_counter()
      for i in range(n):
        state, metrics = step(state, next(feeds))
        if cli.progress_due(args.log_every, i + 1, n):
          jax.block_until_ready(metrics)
          cli.progress(label, i + 1, n, (i + 1) * args.batch_size, t0)
      jax.block_until_ready((state, metrics))
      wall = time.perf_counter() - t0
    out[stage] = {
      'steps': n,
      'images': n * args.batch_size,
      'wall': wall,
      'first': first,
      'compile': clock.seconds,
      'recompiles': recompiles.count,
      'loss': float(metrics['train/loss'][0]),  # the first seed's
      'finite': int(state.first_bad_step[0]) < 0,
    }
  return out


# --- Report --------------------------------------------------------------------


def secs(x) -> str:
  return f'{x:.1f}' if x >= 10 else f'{x:.3g}'


def table(results) -> str:
  rows = [
    '| stage | implementation | steps | images | first step s | compile s | '
    'epoch wall s | images/s | speed vs PyTorch |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for stage in STAGES:
    base = results.get(('torch', stage))
    for impl in IMPLS:
      r = results.get((impl, stage))
      if r is None:
        continue
      rate = r['images'] / r['wall']
      speed = f'{rate / (base["images"] / base["wall"]):.2f}x' if base else '–'
      comp = '–' if r['compile'] is None else secs(r['compile'])
      rows.append(
        f'| {stage} | {impl} | {r["steps"]} | {r["images"]} | '
        f'{secs(r["first"])} | {comp} | {secs(r["wall"])} | '
        f'{rate:.{0 if rate >= 100 else 1}f} | {speed} |'
      )
  return '\n'.join(rows)


def main(argv=None) -> str:
  args = parse_args(sys.argv[1:] if argv is None else list(argv))

  from ltjax import datasets, devices, inputs

  results = {}
  with tempfile.TemporaryDirectory(prefix='ltjax_epoch_') as workdir:
    cli.log('preparing the data')
    config = make_config(args, workdir)
    arrays = datasets.load_array_datasets(config)
    data = inputs.DeviceInput(config, devices.make_mesh(), arrays)
    spe = data.steps_per_epoch
    if 'ltjax' in args.impls:
      for stage, r in ltjax_epochs(args, config, data).items():
        results[('ltjax', stage)] = r
    del data
    if 'torch' in args.impls:
      from benchmarks import (
        torch_epoch,  # lazily: ltjax-only runs need no torch
      )

      lrs = {s: stage_lr(config, spe, s) for s in args.stages}
      model = MODELS[args.model]
      for stage, r in torch_epoch.torch_epochs(
        args, config, arrays, lrs, model
      ).items():
        results[('torch', stage)] = r

  source = (
    f'real images from {args.data_dir}'
    if args.data_dir
    else f'synthetic {args.image_size}x{args.image_size} images, '
    f'{args.pool_per_class} per class before the split'
  )
  lrs = ', '.join(f'{s} {stage_lr(config, spe, s):g}' for s in args.stages)
  torch_module = sys.modules['torch'] if 'torch' in args.impls else None
  lines = [
    f'{machine.header(torch_module)}, numpy {np.__version__}, '
    f'Pillow {PIL.__version__}.',
    f'CIFAR-10-LT, imbalance {args.imbalance:g}, {source}: '
    f'{arrays.summary} (split sha256 {arrays.digest[:12]}). Model '
    f'{args.model}, batch {args.batch_size}, dev batch '
    f'{args.dev_batch_size}, lr {lrs}; torch on '
    f'{machine.torch_device(args.torch_device) if torch_module else "-"}'
    f', threads {args.threads or os.cpu_count()}, DataLoader workers '
    f'{args.workers}.',
    'Epochs run one after another in one process (not interleaved), '
    f'{args.pause:g} s idle before each. A full ltjax epoch drops the last '
    'partial batch, PyTorch keeps it. First step: one untimed step (ltjax: '
    'with its compilation; compile s: JAX trace + lowering + XLA compile).',
    '',
    table(results),
  ]
  again = [k for k, r in results.items() if r['recompiles']]
  if again:
    lines.append(f'\nWarning: {again} compiled again while timed.')
  return cli.report(lines, [k for k, r in results.items() if not r['finite']])


if __name__ == '__main__':
  main()
