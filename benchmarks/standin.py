"""A full-size iNaturalist 2018 stand-in: how long a real-size start takes.

Run::

  python -m benchmarks.standin --out_dir=DIR --scale=0.1
  python -m benchmarks.standin --out_dir=DIR --scale=1

writes (once per scale, into ``DIR/scale_<s>``) a *prepared* tfds dataset
with the real ``i_naturalist2018`` builder's name, version and features, and
its split sizes: 437,513 train records over 8,142 classes with a
long-tailed count profile like the real one (from 1,000 images in the
largest class down to 2, as in the released train split), and 24,426
validation records (3 per class, as released). Images are small photo-like
JPEGs (``--side`` x 3/4 ``--side``), so the full size fits in about a GB;
real iNaturalist JPEGs are ~100x larger, so the bytes read here are a lower
bound. ``--scale=0.1`` keeps the 8,142 classes and divides each class's
count by 10 (at least 3, so the 2-image dev carve leaves every class a
training image).

Then it starts the real command, ``python -m ltjax.main
--config=configs/inat2018.py`` on that folder, three times, stopping each
with SIGTERM right after its first training step (the trainer checkpoints
and exits, as on a preemption):

1. ``cache off``: ``--config.data.cache_dir=off``, the labels read from
   every record, as before the label cache;
2. ``first start``: an empty cache; the labels are read and cached;
3. ``second start``: the same command again: it resumes from the
   checkpoint of start 2 and reads the labels from the cache.

For each it reports the wall time to the first step, the trainer's own
phase lines (``ltjax.phases``), and the process's peak resident memory.
Last, one evaluation pass of the validation split through the host
pipeline (decode, resize, center crop, normalize; no model), in-process.

``--dev_stream`` instead times passes over the dev records (2 per class,
carved from train), as the meta stage's dev stream and each dev evaluation
read them: filtered from all of train without a cache, and from their copy
in the cache (:meth:`ltjax.data.tfds_sources.TfdsSource._stream`).

``--places`` instead measures Places-LT epochs on a ``places365_small``
stand-in (:mod:`benchmarks.standin_places`).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

from benchmarks import cli, machine
from benchmarks.data_pipeline import synthetic_jpegs, write_prepared

NAME = 'i_naturalist2018'
NUM_CLASSES, NUM_TRAIN, NUM_VAL_PER_CLASS = 8142, 437_513, 3
LARGEST, SMALLEST = 1000, 2  # images per class in the released train split
PHASE = re.compile(r'Start: (.+) took ([0-9.]+) s')


def class_counts(scale: float = 1.0) -> np.ndarray:
  """Train images per class: ``LARGEST * exp(-b r**p)`` over the rank ``r``
  in [0, 1], with ``b`` so that the last class has ``SMALLEST`` and ``p``
  so that the counts sum to ``NUM_TRAIN`` exactly (the released split's
  largest, smallest and total); ``scale < 1`` divides them (at least 3 per
  class)."""
  ranks = np.linspace(0.0, 1.0, NUM_CLASSES)
  b = np.log(LARGEST / SMALLEST)

  def counts(p):
    return np.round(LARGEST * np.exp(-b * ranks**p)).astype(int)

  lo, hi = 0.01, 1.0  # sum(counts) grows with p
  for _ in range(60):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if counts(mid).sum() < NUM_TRAIN else (lo, mid)
  out = counts(hi)
  out[1 : 1 + out.sum() - NUM_TRAIN] -= 1  # the rounding, below the head
  assert out.sum() == NUM_TRAIN and out.max() == LARGEST
  if scale < 1:
    out = np.maximum(3, np.round(out * scale)).astype(int)
  return out


def write_standin(data_dir, scale: float, side: int, seed: int = 0) -> dict:
  """The stand-in at ``scale`` in ``data_dir``; its split sizes."""
  counts = class_counts(scale)
  # Records in a shuffled class order, as a prepared dataset holds them.
  rng = np.random.default_rng(seed)
  train_labels = rng.permutation(np.repeat(np.arange(NUM_CLASSES), counts))
  val_labels = np.repeat(np.arange(NUM_CLASSES), NUM_VAL_PER_CLASS)
  pool = synthetic_jpegs(256, side, seed)  # square; cropped below
  pool = [_crop_jpeg(b, side * 3 // 4) for b in pool]

  def example(labels, prefix):
    def fn(i):
      return {
        'id': f'{prefix}{i:07d}',
        'image': io.BytesIO(pool[i % len(pool)]),
        'label': int(labels[i]),
        'supercategory': int(labels[i]) % 14,
      }

    return fn

  write_prepared(
    data_dir,
    NAME,
    {
      'train': (len(train_labels), example(train_labels, 't')),
      'validation': (len(val_labels), example(val_labels, 'v')),
    },
    num_shards=max(1, round(64 * scale)),
  )
  return {'train': len(train_labels), 'validation': len(val_labels)}


def _crop_jpeg(jpeg: bytes, height: int) -> bytes:
  import tensorflow as tf

  image = tf.io.decode_jpeg(jpeg)[:height]
  return tf.io.encode_jpeg(image, quality=90).numpy()


def start_once(data_dir, workdir, cache_dir, overrides, timeout) -> dict:
  """Runs the real command until its first step; ``{'wall', 'phases',
  'peak_rss_mib', 'resumed'}``."""
  command = [
    sys.executable, '-m', 'ltjax.main',
    f'--config={os.path.join(cli.REPO, "configs", "inat2018.py")}',
    f'--config.data.tfds_data_dir={data_dir}', f'--workdir={workdir}',
    f'--config.data.cache_dir={cache_dir}', *overrides,
  ]  # fmt: skip
  start = time.perf_counter()
  proc = subprocess.Popen(
    command, cwd=cli.REPO, stderr=subprocess.PIPE, text=True, bufsize=1
  )
  phases, wall, resumed, lines = {}, None, False, []
  deadline = start + timeout
  for line in proc.stderr:
    lines.append(line)
    resumed |= 'Resumed from the checkpoint' in line
    match = PHASE.search(line)
    if match:
      phases[match.group(1)] = float(match.group(2))
      if match.group(1).startswith('the first step'):
        wall = time.perf_counter() - start
        proc.send_signal(signal.SIGTERM)  # checkpoint and exit
    if time.perf_counter() > deadline:
      proc.kill()
      break
  _, status, usage = os.wait4(proc.pid, 0)
  proc.returncode = os.waitstatus_to_exitcode(status)
  if wall is None:
    raise SystemExit(
      f'the run stopped before its first step (exit {proc.returncode}):\n'
      + ''.join(lines[-30:])
    )
  return {
    'wall': wall,
    'phases': phases,
    'peak_rss_mib': usage.ru_maxrss / 1024,  # Linux: KiB
    'resumed': resumed,
  }


def inat_config(data_dir, cache_dir):
  """``configs/inat2018.py`` reading the stand-in in ``data_dir``."""
  from ltjax import config_lib

  config = config_lib.from_file(
    os.path.join(cli.REPO, 'configs', 'inat2018.py')
  )
  config.data.tfds_data_dir, config.data.cache_dir = data_dir, cache_dir
  return config


def eval_pass(data_dir, cache_dir, image_size, batch_size) -> tuple:
  """``(seconds, images)`` of one pass over the validation split through
  the trainer's host input (``inputs.build_input``), no model."""
  from ltjax import devices, inputs

  config = inat_config(data_dir, cache_dir)
  config.image_size, config.eval_batch_size = image_size, batch_size
  data = inputs.build_input(config, devices.make_mesh())
  start, images = time.perf_counter(), 0
  for _, _, mask in data.eval_batches('test'):
    images += int(np.sum(mask))
  return time.perf_counter() - start, images


def dev_passes(data_dir, cache_dir, passes: int = 3) -> list[tuple]:
  """``(what, seconds, records)`` of passes over the dev set's encoded
  records, as the meta stage's dev stream and each dev evaluation read
  them: filtered from train (no cache), then the copy's first use (which
  writes it) and ``passes`` reads of the copy."""
  from ltjax.data import tfds_sources

  config = inat_config(data_dir, cache_dir)
  shutil.rmtree(cache_dir, ignore_errors=True)
  rows = []
  for what, cache in [
    ('filtered from all of train (no cache)', 'off'),
    ('first use: writes the copy', cache_dir),
  ] + [('from the copy', cache_dir)] * passes:
    config.data.cache_dir = cache
    source = tfds_sources.from_config(config)
    split = source.dev_split(config.data.split_seed)
    start = time.perf_counter()
    ds = source.dataset(split.dev_from, split.dev, decode=False)
    records = int(ds.reduce(0, lambda n, _: n + 1))
    rows.append((what, time.perf_counter() - start, records))
    cli.log(f'[standin] dev pass {what}: {rows[-1][1]:.1f} s')
  return rows


def parse_args(argv):
  p, add = cli.parser(__doc__)
  add('out_dir', required=True, help='folder for the stand-in data and runs')
  add('scale', type=float, default=1.0, help='1, or 0.1 (see above)')
  add('side', type=int, default=80, help='stand-in JPEG width in pixels')
  add('model', default='resnet50', help="the config's is resnet50")
  add('batch_size', type=int, default=256, help="the config's is 256")
  add('method', default='ce', help='stage 1 of every method is plain CE')
  add('timeout', type=float, default=3600.0, help='seconds per start')
  add(
    'places',
    action='store_true',
    help='instead: Places-LT epochs on a places365_small stand-in',
  )
  add(
    'dev_stream',
    action='store_true',
    help='instead: passes over the dev records, with and without their copy',
  )
  args = p.parse_args(argv)
  if not 0 < args.scale <= 1:
    p.error(f'--scale must be in (0, 1], got {args.scale}')
  return args


def main(argv=None) -> str:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  if args.places:
    from benchmarks import standin_places

    return standin_places.main(args)
  root = os.path.abspath(os.path.join(args.out_dir, f'scale_{args.scale:g}'))
  data_dir, cache = os.path.join(root, 'tfds'), os.path.join(root, 'cache')
  if not os.path.isdir(os.path.join(data_dir, NAME)):
    cli.log(f'[standin] writing the stand-in at scale {args.scale:g} ...')
    start = time.perf_counter()
    sizes = write_standin(data_dir, args.scale, args.side)
    cli.log(f'[standin] wrote {sizes} in {time.perf_counter() - start:.0f} s')
  if args.dev_stream:
    rows = dev_passes(data_dir, os.path.join(root, 'cache_dev'))
    return cli.report(
      [
        machine.header(),
        f'stand-in at scale {args.scale:g}: one pass over the dev records',
        '',
        '| read | seconds | records |',
        '|---|---:|---:|',
      ]
      + [f'| {what} | {sec:.2f} | {n} |' for what, sec, n in rows]
    )
  overrides = [
    f'--config.model={args.model}',
    f'--config.batch_size={args.batch_size}',
    f'--config.method={args.method}',
  ]
  rows = []
  for label, cache_dir, fresh in [
    ('cache off', 'off', True),
    ('first start, empty cache', cache, True),
    ('second start (resumes; cached labels)', cache, False),
  ]:
    workdir = os.path.join(
      root, 'run_' + ('off' if cache_dir == 'off' else 'on')
    )
    if fresh:
      shutil.rmtree(workdir, ignore_errors=True)
      if cache_dir != 'off':
        shutil.rmtree(cache_dir, ignore_errors=True)
    cli.log(f'[standin] {label} ...')
    result = start_once(data_dir, workdir, cache_dir, overrides, args.timeout)
    rows.append((label, result))
    cli.log(f'[standin] {label}: first step after {result["wall"]:.1f} s')
  seconds, images = eval_pass(data_dir, cache, 224, args.batch_size)
  return cli.report(_table(args, data_dir, rows, seconds, images))


def _table(args, data_dir, rows, eval_seconds, eval_images) -> list[str]:
  size = sum(
    os.path.getsize(os.path.join(d, f))
    for d, _, files in os.walk(data_dir)
    for f in files
  )
  names = list(dict.fromkeys(k for _, r in rows for k in r['phases']))
  lines = [
    f'{machine.header()}',
    f'stand-in at scale {args.scale:g}: {size / 2**30:.2f} GiB of tfds files; '
    f'model {args.model}, batch {args.batch_size}, method {args.method}',
    '',
    '| start | to first step (s) | '
    + ' | '.join(names)
    + ' | peak RSS (MiB) |',
    '|---|---:|' + '---:|' * len(names) + '---:|',
  ]
  for label, r in rows:
    cells = [f'{r["phases"].get(n, float("nan")):.1f}' for n in names]
    lines.append(
      f'| {label} | {r["wall"]:.1f} | '
      + ' | '.join(cells)
      + f' | {r["peak_rss_mib"]:.0f} |'
    )
  lines += [
    '',
    f'evaluation pass (host pipeline, no model): {eval_images} images in '
    f'{eval_seconds:.1f} s, {eval_images / eval_seconds:.0f} images/s',
  ]
  return lines


if __name__ == '__main__':
  main()
