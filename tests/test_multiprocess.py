"""Two processes, one run: ``jax.distributed`` on this CPU (loopback
coordinator, gloo collectives) against one process with the same global
batch. Each process is ``tests/multiprocess_run.py``."""

import json
import os
import pathlib
import subprocess
import sys
from collections import Counter

import numpy as np
import orbax.checkpoint as ocp
import pytest

from ltjax.checkpoint import load_numpy
from ltjax.summary import read_jsonl
from tests.processes import communicate_all, free_port

REPO = pathlib.Path(__file__).resolve().parents[1]


def run(spec, num_processes, devices=1, timeout=300):
  """Runs ``spec`` in ``num_processes`` processes of ``devices`` CPU
  devices each; their stderr. A run here takes under a minute on 2 CPUs
  (30 to 60 s, other tests beside it), so ``timeout`` means a hang."""
  port = free_port()
  flag = f'--xla_force_host_platform_device_count={devices}'
  env = {**os.environ, 'XLA_FLAGS': f'{os.environ.get("XLA_FLAGS", "")} {flag}'}
  command = [sys.executable, '-m', 'tests.multiprocess_run', json.dumps(spec)]
  procs = [
    subprocess.Popen(
      [*command, str(i), str(num_processes), str(port)],
      cwd=REPO,
      env=env,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(num_processes)
  ]
  errs = communicate_all(procs, timeout)
  for p, err in zip(procs, errs, strict=True):
    assert p.returncode == 0, err[-3000:]
  return errs


def assert_close_states(dir_a, dir_b, tol=1e-4):
  """The same state (every field) within float32 rounding.

  The runs reduce the batch in another order (and over gloo): after one
  step they agree to about 1e-6 of each leaf's scale, and SGD amplifies the
  difference step by step, so a test trains only a few steps and allows
  ``tol`` times ``max(1, max |leaf|)`` (biases start at 0 and stay small).
  A shard read twice or BatchNorm statistics of one process alone would be
  off by orders of magnitude more.
  """
  (step_a, a), (step_b, b) = load_numpy(dir_a), load_numpy(dir_b)
  assert step_a == step_b
  # Every field of the state: parameters, BatchNorm statistics, the
  # optimizer's momenta, ε's statistics, the step and the non-finite flag.
  flat_a, flat_b = (ocp.tree.to_flat_dict(t, sep='/') for t in (a, b))
  assert flat_a.keys() == flat_b.keys()
  for key, x in flat_a.items():
    x, y = np.asarray(x), np.asarray(flat_b[key])
    if not np.issubdtype(x.dtype, np.floating):
      np.testing.assert_array_equal(x, y, err_msg=key)
      continue
    scale = max(1.0, float(np.abs(x).max()))
    # The momenta are sums of gradients, which the meta step's second
    # order amplifies most: 1.7e-3 where the parameters were 4e-4 apart.
    allowed = tol * (10 if key.startswith('opt_state') else 1)
    assert np.abs(x - y).max() <= allowed * scale, (key, x.shape)


def assert_written_once(workdir, steps, evals):
  """One process wrote the logs: every step and evaluation once."""
  rows = read_jsonl(workdir / 'metrics.jsonl')
  logged = [r['step'] for r in rows if 'train/loss' in r]
  assert logged == sorted(set(logged)) and logged[-1] == steps
  assert len(read_jsonl(workdir / 'evals.jsonl')) == evals


def assert_counted_once(results, num_test):
  """Every test image counted once, not once per process (nor padded)."""
  test = results['seeds'][0]['last']['test']
  assert test['num_examples'] == num_test
  assert sum(test['reliability']['count']) == num_test


# --- Array data (CIFAR-style, on the device) ---------------------------------

ARRAY_FIELDS = {
  'num_classes': 10, 'model': 'tiny', 'data.imbalance': 0.0,
  'data.train_file': 'train.npz', 'data.test_file': 'test.npz',
  'data.dev_file': 'dev.npz', 'num_epochs': 2, 'stage2_epoch': 1,
  'eval_every_epochs': 1, 'lr_boundaries': [], 'batch_size': 50,
  'dev_batch_size': 20, 'checkpoint_every_steps': 4, 'keep_checkpoints': 5,
  'log_every_steps': 1, 'scale_lr_with_batch': False,
}  # fmt: skip


@pytest.fixture(scope='module')
def npz_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp('npz')
  rng = np.random.default_rng(0)
  for split, n in (('train', 300), ('test', 70), ('dev', 30)):
    labels = np.arange(n) % 10
    if split == 'train':
      labels[10:] = np.minimum(rng.geometric(0.3, n - 10) - 1, 9)
    images = rng.integers(0, 256, (n, 16, 16, 3), np.uint8)
    np.savez(folder / f'{split}.npz', image=images, label=labels)
  return folder


def array_spec(npz_dir, workdir):
  return {
    'config': str(REPO / 'configs' / 'cifar10_lt.py'),
    'variant': 'source=npz,method=ours_ce',
    'fields': {**ARRAY_FIELDS, 'data.dir': str(npz_dir)},
    'workdir': str(workdir),
  }


def test_two_processes_train_arrays_as_one(npz_dir, tmp_path):
  one, two = tmp_path / 'one', tmp_path / 'two'
  run(array_spec(npz_dir, one), 1)
  run(array_spec(npz_dir, two), 2)
  # 300 images in batches of 50: 6 steps an epoch, 12 in all, 6 of ours_ce.
  assert_close_states(one, two)
  for workdir in (one, two):
    results = json.loads((workdir / 'results.json').read_text())
    assert results['steps'] == 12
    assert_counted_once(results, 70)
  assert_written_once(two, 12, 2)
  # One checkpoint folder per save (steps 4, 8, the last, and 6, where
  # stage 2 starts), written once.
  assert sorted(os.listdir(two / 'checkpoints')) == ['12', '4', '6', '8']
  # A two-process resume ends bit-identical to an uninterrupted two-process
  # run: tests/test_faults.py, after a SIGTERM to one of the processes.


# --- A large (tfds, host-pipeline) dataset, mocked ------------------------


def tfds_spec(workdir, record):
  return {
    'config': str(REPO / 'configs' / 'imagenet_lt.py'),
    'variant': 'method=ours_ce',
    'fields': {
      'model': 'tiny',
      'image_size': 16,
      'num_epochs': 2,
      'stage2_epoch': 1,
      'eval_every_epochs': 1,
      'log_every_steps': 1,
      'batch_size': 512,
      'scale_lr_with_batch': False,  # the rate these tolerances were set at
      'dev_batch_size': 256,
      'eval_batch_size': 256,
      'data.dev_per_class': 1,
      'lr_boundaries': [],
      'checkpoint_every_steps': 100,
      'data.tfds_data_dir': str(workdir.parent / 'tfds'),
    },  # fmt: skip
    'tfds': {
      'sizes': {'train': 1100, 'validation': 1000, 'test': 130},
      'num_classes': 1000,
    },
    'workdir': str(workdir),
    'record': str(record),
  }


def by_step(path):
  """``{(stream, step): (labels, checksums)}`` from a record file."""
  return {
    (r['stream'], r['step']): (r['label'], r['sum']) for r in read_jsonl(path)
  }


def test_two_processes_read_their_own_shards_of_a_large_dataset(tmp_path):
  pytest.importorskip('tensorflow_datasets')
  one, two = tmp_path / 'one', tmp_path / 'two'
  for workdir in (one, two):
    (workdir / 'record').mkdir(parents=True)
  run(tfds_spec(one / 'run', one / 'record'), 1)
  run(tfds_spec(two / 'run', two / 'record'), 2)
  # Four steps, two of them meta steps, which amplify the rounding more: on
  # a 2-CPU AMD EPYC the parameters differed by up to 4e-4 of their scale
  # (2026-12-05). What each process read is compared exactly below, from
  # the batches' records.
  assert_close_states(one / 'run', two / 'run', tol=1e-3)
  # The tolerance is no blanket: with one fault, both processes reading
  # shard 0, the states differ by a median of 1e-2 of their scale (BatchNorm
  # variances by 6e-2, the momenta by 4e-2, the class counts outright).
  bad = tmp_path / 'bad'
  (bad / 'record').mkdir(parents=True)
  run(
    {**tfds_spec(bad / 'run', bad / 'record'), 'fault': 'shard_read_twice'}, 2
  )
  with pytest.raises(AssertionError):
    assert_close_states(one / 'run', bad / 'run', tol=1e-3)

  single = by_step(one / 'record' / 'p0.jsonl')
  p0, p1 = (by_step(two / 'record' / f'p{i}.jsonl') for i in (0, 1))
  # 1100 training images in global batches of 512: 2 steps an epoch, 4 in
  # all; the dev stream (1000 images, batches of 256) from step 2.
  assert {s for stream, s in single if stream == 1100} == set(range(4))
  assert {s for stream, s in single if stream == 1000} == set(range(2))
  assert set(p0) == set(p1) == set(single)
  for key, (labels, sums) in single.items():
    (l0, s0), (l1, s1) = p0[key], p1[key]
    assert len(l0) == len(l1) == len(labels) // 2
    # Half each, and together, as multisets, the one process's batch: the
    # same examples with the same augmentation, none read by both.
    assert Counter(l0) + Counter(l1) == Counter(labels)
    np.testing.assert_array_equal(sorted(s0 + s1), sorted(sums))
  assert_counted_once(
    json.loads((two / 'run' / 'results.json').read_text()), 130
  )
  assert_written_once(two / 'run', 4, 2)
