"""ltjax vs the official PyTorch algorithm: CE step and meta step, side by side.

Run from the repository root::

  python -m benchmarks.meta_step                  # ResNet-32, batch 100
  python -m benchmarks.meta_step --which=meta --repeats=10
  python -m benchmarks.meta_step --model=tiny --batch_size=4 --repeats=1 \
    --warmup=1 --image_size=16 --memory=false     # smoke test

Both implementations run in one process on the same random CIFAR-shaped
batches and the same class-balanced weights:

- ``ce``: one plain cross-entropy step, forward + backward + SGD (momentum
  0.9, Nesterov, weight decay 5e-4). ltjax: ``jax.value_and_grad`` of the mean
  loss of :func:`ltjax.models.make_loss_fn` plus optax, jitted with the
  training state donated. PyTorch: ``loss.backward()`` and ``torch.optim.SGD``
  as the official training loop.
- ``meta``: one meta step (Algorithm 1 of Jamal et al., CVPR 2020) and the
  optimizer update. ltjax: :func:`ltjax.meta_step` (default ``eps_grad='jvp'``)
  plus optax, jitted and donated. PyTorch: ``official_meta_step`` of
  ``benchmarks/torch_reference.py`` (a fresh model loaded with ``load_state_dict``
  every step, the eps-weighted SUM inner loss, ``autograd.grad(...,
  create_graph=True)``, the dev loss at theta-tilde, its gradient in eps,
  then the weighted final loss and the optimizer step).

The ltjax model uses ``--conv_impl`` (default ``auto``, the library default)
and its steps are compiled with :func:`ltjax.models.xla_cpu_compiler_options`
(``--xla_options=off``: XLA's defaults). Lists (``--conv_impl=auto,lax
--xla_options=on,off``) time every combination side by side.

Timing: after ``--warmup`` rounds (ltjax compiles ahead of time, before
them), ``--repeats`` rounds each run one step of every selected (step,
implementation) in turn, so that a noisy shared machine slows all of them
alike; the table gives the median. Each step starts after ``--pause`` idle
seconds: the worker threads of both libraries spin for a while after their
work and would otherwise slow the next step of the other library.

Peak memory (``--memory``): each (step, implementation) runs again in a
fresh subprocess with glibc's mmap threshold fixed at 64 KiB (so freed large
buffers leave the resident set at once); after setup and compilation it
resets the resident-set high-water mark (``/proc/self/clear_refs``), runs
two steps and reports the rise of the high-water mark over the resident set
before them. For ltjax the table also gives XLA's own count for the compiled
step: arguments + outputs + temporaries - donated (aliased) bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from benchmarks import cli, machine

STEPS = ('ce', 'meta')
IMPLS = ('ltjax', 'torch')
MODELS = {  # name: (stage_sizes, widths)
  'resnet32': ((5, 5, 5), (16, 32, 64)),
  'tiny': ((1, 1, 1), (4, 8, 16)),
}
IMBALANCE = 100  # class counts of the CIFAR-LT profile behind the weights


def parse_args(argv=None) -> argparse.Namespace:
  p, add = cli.parser(__doc__)

  def boolean(text):
    return text.lower() in ('1', 'true', 'yes')

  add('batch_size', type=int, default=100)
  add('dev_batch_size', type=int, default=100)
  add('repeats', type=int, default=5, help='timed rounds (median reported)')
  add('warmup', type=int, default=2, help='untimed rounds first')
  add('which', type=cli.csv(STEPS), default=list(STEPS), help='ce,meta')
  add('impls', type=cli.csv(IMPLS), default=list(IMPLS), help='ltjax,torch')
  add('model', choices=tuple(MODELS), default='resnet32')
  add('image_size', type=int, default=32)
  add('num_classes', type=int, default=10)
  add(
    'conv_impl',
    type=cli.csv(('auto', 'lax', 'cpu')),
    default=['auto'],
    help="ltjax convolution: 'auto', 'lax' or 'cpu'; several (auto,lax) "
    'give one ltjax row each',
  )
  add(
    'xla_options',
    type=cli.csv(('on', 'off')),
    default=['on'],
    help='ltjax: compile with ltjax.models.xla_cpu_compiler_options() (on) '
    'or with XLA defaults (off); on,off gives one ltjax row each',
  )
  add('lr', type=float, default=0.01, help='lr and inner lr (eta)')
  add('threads', type=int, default=0, help='torch threads; 0: all CPUs')
  cli.add_torch_device(add)
  add(
    'pause',
    type=float,
    default=0.1,
    help='seconds of idle before each timed step, so that the worker '
    'threads of the step before (the other library) stop spinning',
  )
  add('memory', type=boolean, default=True, help='measure peak memory')
  add('probe', default='', help=argparse.SUPPRESS)  # internal: 'impl:step'
  return p.parse_args(argv)


def class_weights(num_classes: int) -> np.ndarray:
  import ltjax

  i = np.arange(num_classes)
  counts = np.floor(5000 * (1 / IMBALANCE) ** (i / max(num_classes - 1, 1)))
  return np.asarray(ltjax.class_balanced_weights(counts), np.float32)


def make_data(args):
  rng = np.random.default_rng(0)
  size = (args.image_size, args.image_size, 3)
  return {
    'x': rng.normal(size=(args.batch_size, *size)).astype(np.float32),
    'y': rng.integers(0, args.num_classes, args.batch_size),
    'xd': rng.normal(size=(args.dev_batch_size, *size)).astype(np.float32),
    'yd': rng.integers(0, args.num_classes, args.dev_batch_size),
    'w': class_weights(args.num_classes),
  }


def ltjax_steps(args, data, steps, variant):
  """{step: (run, compiled, holder)}; run() does one step in place."""
  import jax
  import jax.numpy as jnp
  import optax

  import ltjax
  from ltjax import models

  conv_impl, xla_options = variant
  options = models.xla_cpu_compiler_options() if xla_options == 'on' else {}
  stage_sizes, widths = MODELS[args.model]
  model = models.CifarResNet(
    args.num_classes, stage_sizes, widths, conv_impl=conv_impl
  )
  loss_fn = models.make_loss_fn(model, ltjax.softmax_cross_entropy)
  opt = optax.chain(
    optax.add_decayed_weights(5e-4),
    optax.sgd(args.lr, momentum=0.9, nesterov=True),
  )
  batch = {'image': jnp.asarray(data['x']), 'label': jnp.asarray(data['y'])}
  dev = {'image': jnp.asarray(data['xd']), 'label': jnp.asarray(data['yd'])}
  weights = jnp.asarray(data['w'])

  @jax.jit
  def init_state():  # jitted: eager Flax init compiles op by op
    v = model.init(jax.random.key(0), batch['image'][:1], train=False)
    return v['params'], v['batch_stats'], opt.init(v['params'])

  def update(state, grads, new_stats):
    params, _, opt_state = state
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_stats, opt_state

  def ce(state, batch, dev):
    del dev

    def loss(p):
      losses, new_stats = loss_fn(p, state[1], batch)
      return losses.mean(), new_stats

    (value, new_stats), grads = jax.value_and_grad(loss, has_aux=True)(state[0])
    return update(state, grads, new_stats), value

  def meta(state, batch, dev):
    out = ltjax.meta_step(
      loss_fn, state[0], state[1], batch, dev, weights[batch['label']],
      inner_lr=args.lr,
    )  # fmt: skip
    return update(state, out.grads, out.model_state), out.train_loss

  fns = {'ce': ce, 'meta': meta}
  out = {}
  for step in steps:
    jitted = jax.jit(fns[step], donate_argnums=0)
    compiled = jitted.lower(init_state(), batch, dev).compile(options)
    holder = {'state': init_state()}

    def run(compiled=compiled, holder=holder):
      holder['state'], loss = compiled(holder['state'], batch, dev)
      jax.block_until_ready((holder['state'], loss))
      holder['loss'] = float(loss)

    out[step] = (run, compiled, holder)
  return out


def torch_steps(args, data, steps, variant=None):
  del variant
  import torch

  from benchmarks import torch_reference

  torch.set_num_threads(args.threads or os.cpu_count())
  device = machine.torch_device(args.torch_device)
  stage_sizes, widths = MODELS[args.model]

  def tensor(a, nchw=False):
    a = a.transpose(0, 3, 1, 2).copy() if nchw else a
    return torch.from_numpy(a).to(device)

  x, xd = tensor(data['x'], True), tensor(data['xd'], True)
  y, yd, w = tensor(data['y']), tensor(data['yd']), tensor(data['w'])
  out = {}
  for step in steps:
    torch.manual_seed(0)
    net = torch_reference.CifarResNet(stage_sizes, widths, args.num_classes)
    net = net.to(device)
    opt = torch_reference.make_sgd(net, args.lr)
    holder = {}

    def run(step=step, net=net, opt=opt, holder=holder):
      if step == 'ce':
        loss = torch_reference.official_ce_step(net, opt, x, y)
      else:
        loss = torch_reference.official_meta_step(
          net, opt, x, y, xd, yd, w, inner_lr=args.lr
        )['train_loss']
      holder['loss'] = loss.item()

    out[step] = (run, None, holder)
  return out


def probe_memory(args) -> None:
  """Child process: prints the high-water rise of two steps, in bytes."""
  impl, step = args.probe.split(':')
  make = ltjax_steps if impl == 'ltjax' else torch_steps
  variant = (args.conv_impl[-1], args.xla_options[-1])
  run = make(args, make_data(args), [step], variant)[step][0]
  print(json.dumps({'rss_peak_delta': machine.rss_peak_rise(run, 2)}))


def measure_memory(argv, impl, variant, step) -> float | None:
  env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536')
  cmd = [sys.executable, '-m', 'benchmarks.meta_step', *argv]
  cmd.append(f'--probe={impl}:{step}')
  if variant:
    cmd += [f'--conv_impl={variant[0]}', f'--xla_options={variant[1]}']
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    out = subprocess.run(
      cmd, env=env, cwd=repo, capture_output=True, text=True, check=True,
      timeout=900,
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])['rss_peak_delta']
  except (subprocess.SubprocessError, ValueError, KeyError, IndexError) as e:
    print(f'memory probe {impl}:{step} failed: {e}', file=sys.stderr)
    return None


def time_steps(runs, args):
  """Round-robin timing; returns {key: [seconds...]} of the timed rounds."""
  times = {key: [] for key in runs}
  for r in range(args.warmup + args.repeats):
    for key, run in runs.items():
      time.sleep(args.pause)
      start = time.perf_counter()
      run()
      if r >= args.warmup:
        times[key].append(time.perf_counter() - start)
  return times


def mib(nbytes):
  if nbytes is None:
    return '–'
  return f'{nbytes / 2**20:.{0 if nbytes >= 10 * 2**20 else 1}f}'


def implementations(args):
  """[(label, impl, variant)] in table order."""
  out = []
  for impl in IMPLS:
    if impl not in args.impls:
      continue
    if impl == 'torch':
      out.append(('torch', impl, None))
    for c in args.conv_impl if impl == 'ltjax' else ():
      for o in args.xla_options:
        label = 'ltjax'
        label += f' conv={c}' if len(args.conv_impl) > 1 else ''
        label += f' xla_options={o}' if len(args.xla_options) > 1 else ''
        out.append((label, impl, (c, o)))
  return out


def table(args, medians, memory, xla_bytes) -> str:
  rows = [
    '| step | implementation | ms/step (median) | images/s | speed vs '
    'PyTorch | meta/CE time | peak RSS rise (MiB) | meta/CE memory | XLA '
    'buffers (MiB) |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for step in STEPS:
    for impl, _, _ in implementations(args):
      key = (impl, step)
      if key not in medians:
        continue
      ms = medians[key] * 1e3
      speed = (
        f'{medians[("torch", step)] / medians[key]:.2f}x'
        if ('torch', step) in medians
        else '–'
      )
      cost = mem_ratio = '–'
      if step == 'meta' and (impl, 'ce') in medians:
        cost = f'{medians[key] / medians[(impl, "ce")]:.2f}'
        m, c = memory.get(key), memory.get((impl, 'ce'))
        mem_ratio = f'{m / c:.2f}' if m and c else '–'
      rows.append(
        f'| {step} | {impl} | {ms:.{0 if ms >= 10 else 1}f} | '
        f'{args.batch_size / medians[key]:.0f}'
        f' | {speed} | {cost} | {mib(memory.get(key))} | {mem_ratio} | '
        f'{mib(xla_bytes.get(key))} |'
      )
  return '\n'.join(rows)


def main(argv=None) -> str:
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parse_args(argv)
  if args.probe:
    probe_memory(args)
    return ''

  from ltjax import models

  data = make_data(args)
  runs, holders, xla_bytes, specs = {}, {}, {}, {}
  for label, impl, variant in implementations(args):
    make = ltjax_steps if impl == 'ltjax' else torch_steps
    steps = make(args, data, args.which, variant)
    for step, (run, compiled, holder) in steps.items():
      key = (label, step)
      runs[key], holders[key], specs[key] = run, holder, (impl, variant)
      if compiled is not None:
        m = compiled.memory_analysis()
        xla_bytes[key] = (
          m.argument_size_in_bytes + m.output_size_in_bytes
          + m.temp_size_in_bytes - m.alias_size_in_bytes
        )  # fmt: skip
  cpu0 = time.process_time()
  wall0 = time.perf_counter()
  times = time_steps(runs, args)
  busy = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
  memory = {}
  if args.memory:
    for key in runs:
      memory[key] = measure_memory(argv, *specs[key], key[1])
  medians = {key: float(np.median(t)) for key, t in times.items()}
  xla_text = models.xla_cpu_compiler_options() or 'XLA defaults'
  torch_module = sys.modules['torch'] if 'torch' in args.impls else None
  torch_on = machine.torch_device(args.torch_device) if torch_module else ''
  lines = [
    f'{machine.header(torch_module)}, numpy {np.__version__}.',
    f'Model {args.model} ({args.num_classes} classes, '
    f'{args.image_size}x{args.image_size}x3), batch {args.batch_size}, dev '
    f'batch {args.dev_batch_size}; ltjax conv_impl={",".join(args.conv_impl)}'
    f', xla_options={",".join(args.xla_options)} ({xla_text}); torch '
    f'on {torch_on or "-"}, threads {args.threads or os.cpu_count()}; '
    f'median of {args.repeats} '
    f'round-robin rounds after {args.warmup} warm-up, {args.pause} s idle '
    f'before each step; process CPU use {busy:.2f} cores while timing.',
    'images/s counts training images (the meta step also runs the dev '
    'batch). Peak RSS rise: high-water mark of two steps over the resident '
    'set before them, in a fresh process per row (see the module docstring).',
    '',
    table(args, medians, memory, xla_bytes),
  ]
  bad = [k for k, h in holders.items() if not np.isfinite(h.get('loss', 0))]
  return cli.report(lines, bad)


if __name__ == '__main__':
  main()
