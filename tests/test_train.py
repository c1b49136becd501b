"""End to end: the CLI on real CIFAR-10 images, resume after SIGKILL, bad input."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

import ltjax
from ltjax import evaluate
from ltjax.checkpoint import load_numpy
from ltjax.summary import read_jsonl

REPO = pathlib.Path(__file__).resolve().parents[1]

# Both stages on the real images, with a tiny model: 9 steps per epoch,
# stage 2 (the meta step) from step 27, checkpoints every 5 steps.
RUN_FLAGS = [
  '--config=configs/cifar10_lt.py:source=npz,method=ours_ce',
  '--config.model=tiny',
  '--config.num_epochs=6',
  '--config.stage2_epoch=3',
  '--config.eval_every_epochs=2',
  '--config.log_every_steps=9',
  '--config.checkpoint_every_steps=5',
  '--config.lr_boundaries=(4,5)',
]


def cli(workdir, data_dir, *extra, env=None):
  cmd = [sys.executable, '-m', 'ltjax.main', f'--workdir={workdir}']
  cmd += RUN_FLAGS + [f'--config.data.dir={data_dir}', *extra]
  return cmd


def run_cli(workdir, data_dir, *extra, check=True):
  proc = subprocess.run(
    cli(workdir, data_dir, *extra), cwd=REPO, capture_output=True, text=True
  )
  if check and proc.returncode:
    raise AssertionError(proc.stderr[-4000:])
  return proc


def final_params(workdir):
  return load_numpy(workdir)


@pytest.fixture(scope='module')
def full_run(tmp_path_factory, cifar_prefix_npz):
  workdir = tmp_path_factory.mktemp('full')
  proc = run_cli(workdir, cifar_prefix_npz.parent)
  return workdir, proc


def test_cli_trains_both_stages_and_writes_everything(full_run):
  workdir, proc = full_run
  log = proc.stderr
  assert 'step 27/54 epoch 3.0 stage 1' in log and 'step 54/54' in log
  assert 'stage 2' in log and 'img/s' in log and 's left' in log
  results = json.loads((workdir / 'results.json').read_text())
  assert results['steps'] == 54
  assert results['train_class_counts'][0] == 398  # (4085 - 100) / 10
  test = results['seeds'][0]['last']['test']
  assert test['num_examples'] == 1000 and len(test['per_class_accuracy']) == 10
  for k in ('top1_error', 'top3_error', 'top5_error'):
    assert 0 <= test[k] <= 100
  assert test['top1_error'] >= test['top3_error'] >= test['top5_error']
  # Dev selection picks among the evaluations at epochs 2, 4 and 6.
  assert results['seeds'][0]['dev_selected']['epoch'] in (2, 4, 6)
  rows = read_jsonl(workdir / 'evals.jsonl')
  assert all(len(row['seeds']) == 1 for row in rows)  # one seed
  evals = [r for row in rows for r in evaluate.row_records(row)]
  assert [e['epoch'] for e in evals] == [2, 4, 6]
  # The meta stage learned conditional weights for every class.
  cw = results['conditional_weights']
  assert sum(cw['count']) == 27 * 100 and min(cw['count']) > 0
  assert any(abs(e) > 0 for e in cw['eps_mean'])
  rows = read_jsonl(workdir / 'metrics.jsonl')
  # Every 9 steps, and each stage's quarters (stage 1: 0-27, stage 2: 27-54).
  assert [r['step'] for r in rows if 'train/loss' in r] == sorted(
    {9, 18, 27, 36, 45, 54, 7, 14, 21, 34, 41, 48}
  )
  assert os.listdir(workdir / 'tensorboard')
  assert 0 <= test['ece'] <= 100 and sum(test['reliability']['count']) == 1000
  assert all('ece' in e['test'] for e in evals)
  for png in (
    'conditional_weights.png',
    'per_class_accuracy.png',
    'reliability.png',
  ):
    assert (workdir / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_sigkill_then_resume_matches_uninterrupted(
  full_run, tmp_path, cifar_prefix_npz
):
  workdir = tmp_path / 'killed'
  proc = subprocess.Popen(
    cli(workdir, cifar_prefix_npz.parent),
    cwd=REPO,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  ckpt = workdir / 'checkpoints'
  deadline = time.time() + 300
  # Kill inside stage 2, once a finished checkpoint of the meta stage exists.
  while time.time() < deadline and proc.poll() is None:
    steps = [int(p.name) for p in ckpt.glob('*') if p.name.isdigit()]
    if steps and max(steps) >= 30:
      break
    time.sleep(0.02)
  assert proc.poll() is None, 'the run finished before it could be killed'
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  killed_at = max(int(p.name) for p in ckpt.glob('*') if p.name.isdigit())
  assert 30 <= killed_at < 54

  resumed = run_cli(workdir, cifar_prefix_npz.parent)
  assert f'Resumed from the checkpoint at step {killed_at}' in resumed.stderr
  full_dir, _ = full_run
  step_a, a = final_params(full_dir)
  step_b, b = final_params(workdir)
  assert step_a == step_b == 54
  flat_a, flat_b = (
    dict(ocp.tree.to_flat_dict(x, sep='/')) for x in (a, b)
  )  # fmt: skip
  assert flat_a.keys() == flat_b.keys()
  for k in flat_a:
    np.testing.assert_array_equal(flat_a[k], flat_b[k], err_msg=k)
  ra, rb = (
    json.loads((d / 'results.json').read_text()) for d in (full_dir, workdir)
  )
  assert ra['seeds'] == rb['seeds']

  # The log reads as one run: the same records as the uninterrupted run's,
  # those after the checkpoint written once, with the same losses.
  def records(d):
    rows = read_jsonl(d / 'metrics.jsonl')
    return [
      {k: v for k, v in r.items() if k != 'images_per_second'} for r in rows
    ]

  assert records(workdir) == records(full_dir)


@pytest.mark.parametrize(
  'field, value, match',
  [
    ('method', 'magic', "config.method='magic' is not allowed: use one of"),
    ('dataset', 'mnist', "config.dataset='mnist' is not allowed: use one of"),
    ('data.imbalance', 0.5, r'imbalance=0.5 is not allowed: use 0 .* or >= 1'),
    ('batch_size', 5000, 'batch size 5000 exceeds the 983'),
    ('model', 'vgg', "config.model='vgg' is not allowed: use one of"),
  ],
)
def test_bad_input_stops_before_training(
  tmp_path, cifar_prefix_npz, monkeypatch, field, value, match
):
  # In-process: what the CLI prints is tests/test_config_check's business.
  from ltjax import config_lib, train

  config = config_lib.from_file(
    REPO / 'configs' / 'cifar10_lt.py', 'source=npz,method=ours_ce'
  )
  config.model, config.data.dir = 'tiny', str(cifar_prefix_npz.parent)
  node, *path = field.split('.')
  if path:
    config[node][path[0]] = value
  else:
    config[node] = value

  def no_init(*args):
    raise AssertionError('reached model init')

  monkeypatch.setattr(train, 'make_init_fn', no_init)
  with pytest.raises(ltjax.Error, match=match):  # one line on the CLI
    train.train_and_evaluate(config, tmp_path)
  assert not (tmp_path / 'checkpoints').exists()


def test_workdir_of_another_config_is_refused(full_run, cifar_prefix_npz):
  workdir, _ = full_run
  proc = run_cli(
    workdir, cifar_prefix_npz.parent, '--config.seed=3', check=False
  )
  assert proc.returncode != 0
  assert 'holds a run of another config: the checkpoint at step' in proc.stderr
  assert 'was trained with seed 0 -> 3. At a checkpoint of stage 2' in proc.stderr


def test_own_npz_files_as_readme_shows(tmp_path):
  rng = np.random.default_rng(0)
  for split, n in (('train', 400), ('test', 60), ('dev', 40)):
    labels = np.arange(n) % 20
    if split == 'train':  # long-tailed already: every class, most in few
      labels[20:] = np.minimum(rng.geometric(0.25, n - 20) - 1, 19)
    images = rng.integers(0, 256, (n, 16, 16, 3), np.uint8)
    np.savez(tmp_path / f'{split}.npz', image=images, label=labels)
  cmd = [
    sys.executable, '-m', 'ltjax.main', f'--workdir={tmp_path / "run"}',
    '--config=configs/cifar10_lt.py:source=npz,method=ours_ce',
    '--config.num_classes=20', f'--config.data.dir={tmp_path}',
    '--config.data.train_file=train.npz', '--config.data.test_file=test.npz',
    '--config.data.dev_file=dev.npz', '--config.data.imbalance=0',
    '--config.model=tiny', '--config.num_epochs=2', '--config.stage2_epoch=1',
    '--config.batch_size=50', '--config.dev_batch_size=20',
  ]  # fmt: skip
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads((tmp_path / 'run' / 'results.json').read_text())
  train = np.load(tmp_path / 'train.npz')['label']
  assert (
    results['train_class_counts'] == np.bincount(train, minlength=20).tolist()
  )
  assert results['seeds'][0]['last']['test']['num_examples'] == 60


def test_the_log_is_ltjax_own_and_ends_with_where_the_results_are(full_run):
  workdir, proc = full_run
  lines = [
    ln for ln in proc.stderr.splitlines() if ln[:1] in 'IWEF' and '] ' in ln
  ]
  own = {p.name for p in (REPO / 'ltjax').rglob('*.py')}
  info_from = {
    ln.split('] ')[0].split()[-1].split(':')[0] for ln in lines if ln[0] == 'I'
  }
  assert info_from <= own, info_from - own  # no library INFO chatter
  assert len(lines) <= 30, '\n'.join(lines)  # one screen
  assert f'Results: {workdir / "results.json"}; figures: ' in lines[-1]
