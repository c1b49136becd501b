"""Places-LT epochs on a ``places365_small`` stand-in (``standin --places``).

Writes (once) a ``places365_small`` stand-in of the real split sizes,
1,803,460 train and 36,500 validation records, and Places-LT lists of the
real sizes (62,500 train, 7,300 val, 36,500 test). It then reads one
Places-LT training epoch three ways:

1. without a cache: the whole of Places365 train streams past the filter;
2. on first use with a cache: the file names are cached and the filtered
   copy is written;
3. as every later run does: the copy only.
"""

from __future__ import annotations

import io
import os
import shutil
import time

import numpy as np

from benchmarks import cli, machine
from benchmarks.data_pipeline import synthetic_jpegs, write_prepared

PLACES_TRAIN, PLACES_VAL = 1_803_460, 36_500  # Places365-Standard
PLACES_LT = {'train': 62_500, 'val': 7_300, 'test': 36_500}


def write_places(root, side: int, seed: int = 0) -> tuple:
  """A places365_small stand-in of the real split sizes, and Places-LT
  lists over it: train 62,500 (a long tail over 365 classes), val 20 and
  test 100 per class. ``(data_dir, lists_dir)``."""
  data_dir, lists = os.path.join(root, 'tfds'), os.path.join(root, 'lists')
  if os.path.isdir(os.path.join(data_dir, 'places365_small')):
    return data_dir, lists
  rng = np.random.default_rng(seed)
  labels = {
    'train': rng.integers(0, 365, PLACES_TRAIN),
    'validation': np.repeat(np.arange(365), PLACES_VAL // 365),
  }
  pool = synthetic_jpegs(256, side, seed)

  def example(split, prefix):
    def fn(i):
      return {
        'filename': f'{prefix}/{i:08d}.jpg',
        'image': io.BytesIO(pool[i % len(pool)]),
        'label': int(labels[split][i]),
      }

    return fn

  write_prepared(
    data_dir,
    'places365_small',
    {
      'train': (PLACES_TRAIN, example('train', 'data_256/x')),
      'validation': (PLACES_VAL, example('validation', 'val_256/x')),
    },
    num_shards=64,
  )
  os.makedirs(lists)
  picked = rng.permutation(PLACES_TRAIN)
  parts = {
    'train': picked[: PLACES_LT['train']],
    'val': picked[PLACES_LT['train'] :][: PLACES_LT['val']],
  }
  for split, records in parts.items():
    _write_list(lists, split, 'data_256/x', records, labels['train'])
  _write_list(
    lists, 'test', 'val_256/x', np.arange(PLACES_VAL), labels['validation']
  )
  return data_dir, lists


def _write_list(lists, split, prefix, records, labels):
  from ltjax.data.tfds_sources import PLACES_LT_LISTS  # lazily: TensorFlow

  with open(os.path.join(lists, PLACES_LT_LISTS[split]), 'w') as f:
    for r in records:
      f.write(f'{prefix}/{r:08d}.jpg {labels[r]}\n')


def places_epoch(data_dir, lists, cache_dir) -> dict:
  """One epoch of Places-LT's training records (encoded, as the trainer
  reads them): records read, seconds, and the first use's extra seconds."""
  from ltjax.data import tfds_sources

  start = time.perf_counter()
  source = tfds_sources.TfdsSource(
    'places_lt', data_dir, places_lt_dir=lists, cache_dir=cache_dir
  )
  split = source.dev_split(0)
  ds = source.dataset('train', split.train, decode=False)
  ready = time.perf_counter()
  read = source._stream('train').reduce(0, lambda n, _: n + 1)
  counted = time.perf_counter()
  images = sum(1 for _ in ds.as_numpy_iterator())
  return {
    'setup': ready - start,
    'records': int(read),
    'count_s': counted - ready,
    'epoch_s': time.perf_counter() - counted,
    'images': images,
  }


def main(args) -> str:
  root = os.path.abspath(os.path.join(args.out_dir, 'places'))
  cli.log('[standin] places365_small stand-in ...')
  data_dir, lists = write_places(root, args.side)
  cache = os.path.join(root, 'cache')
  shutil.rmtree(cache, ignore_errors=True)
  lines = [
    machine.header(),
    f'places365_small stand-in: {PLACES_TRAIN:,} train and {PLACES_VAL:,} '
    'validation records; Places-LT lists of the real sizes',
    '',
    '| Places-LT train epoch | records in the stream | set-up s '
    '(labels, names, copy) | epoch s | images |',
    '|---|---:|---:|---:|---:|',
  ]
  for label, cache_dir in [
    ('no cache (all of Places365 train)', ''),
    ('first use: names cached, copy written', cache),
    ('later runs: the filtered copy', cache),
  ]:
    cli.log(f'[standin] {label} ...')
    r = places_epoch(data_dir, lists, cache_dir)
    lines.append(
      f'| {label} | {r["records"]:,} | {r["setup"]:.1f} | '
      f'{r["epoch_s"]:.1f} | {r["images"]:,} |'
    )
  return cli.report(lines)
