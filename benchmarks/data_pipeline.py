"""Throughput of ltjax's input pipelines, offline.

Run: ``python -m benchmarks.data_pipeline [--num-images 2048 ...]``.

CIFAR-LT (device pipeline): ``--cifar-images`` random 32 x 32 uint8 images
(12,406, the size of CIFAR-10-LT at imbalance 100) kept on the device;
:func:`ltjax.data.device_pipeline.train_batch` gathers a batch of 100 and does the
official augmentation in one jitted call. For comparison, the same
augmentation in NumPy on the host (:func:`ltjax.data.augment.augment_numpy`,
per image as a host loader would) plus the transfer to the device.

Large datasets (tf.data host pipeline):

Encodes ``--num-images`` smooth random ``--side`` x ``--side`` JPEGs (low-
frequency colour fields plus noise, so that they compress like photos) into
memory and times :func:`ltjax.data.tf_pipeline.train_batches` (decode inside
the random crop window, resize, flip, normalize, batch) and
:func:`ltjax.data.tf_pipeline.eval_batches` (decode, resize the shorter side,
center crop, normalize, pad). The records come from memory, so this measures
the CPU cost of decoding and augmentation, not disk reads. Prints a Markdown
table with the machine and the date.

The stand-in datasets (:mod:`benchmarks.standin`,
:mod:`benchmarks.standin_places`) and the tfds tests build theirs from
:func:`synthetic_jpegs` and :func:`write_prepared`.
"""

from __future__ import annotations

import argparse
import datetime
import os
import time

import numpy as np

from benchmarks import machine


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


def write_prepared(data_dir, name, splits, num_shards=2) -> None:
  """Writes prepared tfds data of builder ``name`` into ``data_dir``.

  ``splits``: ``{split: (num_examples, example_fn)}`` with ``example_fn(i)``
  the i-th example as a dict of the builder's features; records are
  serialized by the builder's own feature spec (real TFRecord shards and
  metadata, read by tfds's real reader).
  """
  import tensorflow as tf
  import tensorflow_datasets as tfds

  builder = tfds.builder(name, data_dir=os.fspath(data_dir), try_gcs=False)
  os.makedirs(builder.data_dir)
  infos = []
  for split, (count, example_fn) in splits.items():
    template = tfds.core.ShardedFileTemplate(
      data_dir=builder.data_dir,
      template='{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}',
      dataset_name=name,
      split=split,
      filetype_suffix='tfrecord',
    )
    shards = np.array_split(np.arange(count), min(num_shards, max(count, 1)))
    for k, idx in enumerate(shards):
      path = template.sharded_filepath(shard_index=k, num_shards=len(shards))
      with tf.io.TFRecordWriter(os.fspath(path)) as w:
        for i in idx:
          w.write(builder.info.features.serialize_example(example_fn(i)))
    infos.append(
      tfds.core.SplitInfo(
        name=split,
        shard_lengths=[len(i) for i in shards],
        num_bytes=0,
        filename_template=template,
      )
    )
  builder.info.set_splits(tfds.core.SplitDict(infos))
  builder.info.write_to_directory(builder.data_dir)


def _time(batches, steps: int, warmup: int, batch_size: int) -> float:
  for _ in range(warmup):
    next(batches)
  start = time.perf_counter()
  for _ in range(steps):
    next(batches)
  return steps * batch_size / (time.perf_counter() - start)


def cifar_rows(num_images: int, steps: int, warmup: int, batch: int = 100):
  """images/s of the device pipeline and of a host NumPy twin."""
  import jax

  from ltjax.data import ArrayData, augment
  from ltjax.data import device_pipeline as pipeline

  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (num_images, 32, 32, 3), np.uint8)
  labels = (np.arange(num_images) % 10).astype(np.int32)
  data = pipeline.to_device(ArrayData(images, labels))
  key = jax.random.key(0)
  make = jax.jit(pipeline.train_batch, static_argnums=3)
  step = iter(range(10**9))

  def device():
    while True:
      yield jax.block_until_ready(make(data, key, next(step), batch))

  def host():
    while True:
      idx = rng.choice(num_images, batch, replace=False)
      offsets = rng.integers(0, 9, (batch, 2))
      flips = rng.random(batch) < 0.5
      x = augment.augment_numpy(images[idx], offsets, flips)
      yield jax.block_until_ready(jax.device_put(x))

  return [
    (
      f'CIFAR, device: gather + pad/crop/flip/normalize in jit (batch {batch})',
      _time(device(), steps, warmup, batch),
    ),
    (
      f'CIFAR, host NumPy: same augmentation + transfer (batch {batch})',
      _time(host(), steps, warmup, batch),
    ),
  ]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--num-images', type=int, default=2048)
  parser.add_argument('--side', type=int, default=256)
  parser.add_argument('--batch-size', type=int, default=128)
  parser.add_argument('--image-size', type=int, default=224)
  parser.add_argument('--steps', type=int, default=24)
  parser.add_argument('--warmup', type=int, default=4)
  parser.add_argument('--cifar-images', type=int, default=12406)
  args = parser.parse_args(argv)

  rows = cifar_rows(args.cifar_images, 10 * args.steps, args.warmup)
  import tensorflow as tf

  from ltjax.data import tf_pipeline

  jpegs = synthetic_jpegs(args.num_images, args.side)
  mean_kb = np.mean([len(b) for b in jpegs]) / 1024
  labels = np.arange(args.num_images) % 1000
  ds = tf.data.Dataset.from_tensor_slices({'image': jpegs, 'label': labels})
  batch = args.batch_size
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
  resize = tf_pipeline.eval_resize_size(args.image_size)
  rows.append((f'eval: decode, resize {resize}, center crop, normalize', rate))

  import jax

  if hasattr(os, 'sched_getaffinity'):
    cpus = len(os.sched_getaffinity(0))
  else:
    cpus = os.cpu_count()
  print(
    f'Machine: {machine.cpu_model()}, {cpus} CPUs available '
    f'(os.cpu_count() = {os.cpu_count()}); TensorFlow {tf.__version__}; '
    f'{datetime.date.today().isoformat()}; JAX {jax.__version__} on '
    f'{jax.devices()[0].platform}.\n'
    f'Large-dataset input: {args.num_images} synthetic {args.side}x{args.side} JPEGs in '
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
