"""Data parallelism: 1 and 4 CPU devices give the same run; a non-finite
loss stops the run and keeps the last good checkpoint."""

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp

from ltjax.checkpoint import load_numpy

REPO = pathlib.Path(__file__).resolve().parents[1]
FLAGS = [
  '--config=configs/cifar10_lt.py:source=npz,method=ours_ce',
  '--config.model=tiny',
  '--config.num_epochs=2',
  '--config.stage2_epoch=1',
  '--config.log_every_steps=3',
]


def run(workdir, data_dir, *extra, devices=1):
  env = dict(os.environ)
  env['XLA_FLAGS'] = (
    env.get('XLA_FLAGS', '')
    + f' --xla_force_host_platform_device_count={devices}'
  )
  env['JAX_PLATFORMS'] = 'cpu'
  cmd = [sys.executable, '-m', 'ltjax.main', f'--workdir={workdir}']
  cmd += FLAGS + [f'--config.data.dir={data_dir}', *extra]
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)


def flat(state):
  return dict(ocp.tree.to_flat_dict(state, sep='/'))


def test_one_and_four_devices_agree(tmp_path, cifar_prefix_npz):
  # Training amplifies float32 rounding: a 1e-7 change of the parameters
  # moves those after one step by ~3e-6 (relative), and whole runs drift
  # apart. So compare single steps from the same state. Run A checkpoints
  # every step on one device; runs on four devices resume its checkpoints at
  # step 8 (step 9 is a plain step) and step 9 (step 10 is the first meta
  # step).
  data = cifar_prefix_npz.parent
  every_step = [
    '--config.checkpoint_every_steps=1',
    '--config.keep_checkpoints=30',
  ]
  a_dir = tmp_path / 'one'
  one = run(a_dir, data, *every_step, devices=1)
  assert one.returncode == 0, one.stderr[-3000:]
  for start in (8, 9):
    b_dir = tmp_path / f'four_from_{start}'
    shutil.copytree(a_dir, b_dir)
    for ckpt in (b_dir / 'checkpoints').iterdir():
      if ckpt.name.isdigit() and int(ckpt.name) > start:
        shutil.rmtree(ckpt)
    four = run(b_dir, data, *every_step, devices=4)
    assert four.returncode == 0, four.stderr[-3000:]
    assert f'starting at step {start} on 4 device(s)' in four.stderr
    a = flat(load_numpy(a_dir, start + 1)[1])
    b = flat(load_numpy(b_dir, start + 1)[1])
    assert a.keys() == b.keys()
    for k in a:
      scale = max(float(np.max(np.abs(a[k]))), 1e-3)
      np.testing.assert_allclose(
        a[k], b[k], rtol=0, atol=2e-5 * scale, err_msg=f'step {start + 1} {k}'
      )
  assert float(np.abs(a['weight_stats']).sum()) > 0  # a meta step ran


def test_batch_must_divide_over_devices(tmp_path, cifar_prefix_npz):
  proc = run(
    tmp_path, cifar_prefix_npz.parent, '--config.batch_size=98', devices=4
  )
  assert proc.returncode != 0
  assert 'batch_size=98 does not divide evenly over 4 devices' in proc.stderr


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
  tmp_path, cifar_prefix_npz
):
  proc = run(
    tmp_path,
    cifar_prefix_npz.parent,
    '--config.learning_rate=1e12',
    '--config.checkpoint_every_steps=1',
    '--config.log_every_steps=1',
  )
  assert proc.returncode != 0
  assert 'non-finite training loss or parameters at step' in proc.stderr
  bad = int(
    proc.stderr.split('non-finite training loss or parameters at step ')[
      1
    ].split(' ')[0]
  )
  step, state = load_numpy(tmp_path)
  assert step == bad  # the checkpoint of the state before the bad update
  for k, v in flat(state).items():
    if k.startswith('params'):
      assert np.all(np.isfinite(v)), k
