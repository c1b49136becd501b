"""Throughput of the tf.data host pipeline on synthetic JPEGs, offline.

Run: ``python -m benchmarks.data_pipeline [--num-images 2048 ...]``.

Encodes ``--num-images`` smooth random ``--side`` x ``--side`` JPEGs (low-
frequency colour fields plus noise, so that they compress like photos) into
memory and times :func:`ltjax.data.tf_pipeline.train_batches` (decode inside
the random crop window, resize, flip, normalize, batch) and
:func:`ltjax.data.tf_pipeline.eval_batches` (decode, resize the shorter side,
center crop, normalize, pad). The records come from memory, so this measures
the CPU cost of decoding and augmentation, not disk reads. Prints a Markdown
table with the machine and the date.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import numpy as np


def synthetic_jpegs(num_images: int, side: int, seed: int = 0):
  """``num_images`` JPEG byte strings of ``side x side`` RGB photos-alikes."""
  import tensorflow as tf

  rng = np.random.default_rng(seed)
  out = []
  for _ in range(num_images):
    coarse = rng.uniform(0, 255, (1, 8, 8, 3)).astype(np.float32)
    image = tf.image.resize(coarse, [side, side], method='bicubic')[0]
    image = image + rng.normal(0, 8, (side, side, 3))
    image = tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)
    out.append(tf.io.encode_jpeg(image, quality=90).numpy())
  return out


def _cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _time(batches, steps: int, warmup: int, batch_size: int) -> float:
  for _ in range(warmup):
    next(batches)
  start = time.perf_counter()
  for _ in range(steps):
    next(batches)
  return steps * batch_size / (time.perf_counter() - start)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--num-images', type=int, default=2048)
  parser.add_argument('--side', type=int, default=256)
  parser.add_argument('--batch-size', type=int, default=128)
  parser.add_argument('--image-size', type=int, default=224)
  parser.add_argument('--steps', type=int, default=24)
  parser.add_argument('--warmup', type=int, default=4)
  args = parser.parse_args(argv)

  import tensorflow as tf

  from ltjax.data import tf_pipeline

  jpegs = synthetic_jpegs(args.num_images, args.side)
  mean_kb = np.mean([len(b) for b in jpegs]) / 1024
  labels = np.arange(args.num_images) % 1000
  ds = tf.data.Dataset.from_tensor_slices({'image': jpegs, 'label': labels})
  batch = args.batch_size
  rows = []
  train = tf_pipeline.train_batches(
    ds, batch_size=batch, seed=0, image_size=args.image_size
  )
  rate = _time(train, args.steps, args.warmup, batch)
  rows.append(('train: crop-decode, RRC, flip, normalize', rate))
  eval_steps = min(args.steps, args.num_images // batch - args.warmup)

  def evaluation():
    while True:
      yield from tf_pipeline.eval_batches(
        ds, batch_size=batch, image_size=args.image_size
      )

  rate = _time(evaluation(), eval_steps, args.warmup, batch)
  rows.append(('eval: decode, resize 256, center crop, normalize', rate))

  if hasattr(os, 'sched_getaffinity'):
    cpus = len(os.sched_getaffinity(0))
  else:
    cpus = os.cpu_count()
  print(
    f'Machine: {_cpu_model()}, {cpus} CPUs available '
    f'(os.cpu_count() = {os.cpu_count()}); TensorFlow {tf.__version__}; '
    f'{datetime.date.today().isoformat()}.\n'
    f'Input: {args.num_images} synthetic {args.side}x{args.side} JPEGs in '
    f'memory (mean {mean_kb:.1f} KiB); output {args.image_size}x'
    f'{args.image_size}, batch {batch}, {args.steps} timed steps after '
    f'{args.warmup} warm-up.\n'
  )
  print('| pipeline | images/s | images/s per CPU |')
  print('|---|---:|---:|')
  for name, rate in rows:
    print(f'| {name} | {rate:.0f} | {rate / cpus:.0f} |')


if __name__ == '__main__':
  main()
