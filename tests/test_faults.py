"""Faults a long run meets: preemption, damaged checkpoints, data that
changed or does not fit. Small generated arrays (``npz`` files written
here), a tiny model, in-process wherever no real signal is needed."""

import contextlib
import gc
import glob
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from ltjax import config_lib, datasets, preemption, train
from ltjax.checkpoint import UnreadableCheckpointError, load_numpy
from ltjax.summary import read_jsonl
from tests.processes import communicate_all, free_port

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = REPO / 'configs' / 'cifar10_lt.py'
# 400 training images of 20 classes in batches of 50: 8 steps an epoch.
FIELDS = {
  'num_classes': 20,
  'data.train_file': 'train.npz',
  'data.test_file': 'test.npz',
  'data.dev_file': 'dev.npz',
  'data.imbalance': 0.0,
  'model': 'tiny',
  'num_epochs': 2,
  'stage2_epoch': 1,
  'eval_every_epochs': 1,
  'lr_boundaries': (),
  'batch_size': 50,
  'reference_batch_size': 50,  # the config's lr, 0.1, unscaled at batch 50
  'dev_batch_size': 20,
  'checkpoint_every_steps': 2,
  'keep_checkpoints': 3,
}


def write_npz(folder, channels=3, sizes=None):
  """A long-tailed 20-class train file and balanced test and dev files."""
  rng = np.random.default_rng(0)
  sizes = sizes or {}
  for split, n in (('train', 400), ('test', 60), ('dev', 40)):
    labels = np.arange(n) % 20
    if split == 'train':
      labels[20:] = np.minimum(rng.geometric(0.25, n - 20) - 1, 19)
    hw = sizes.get(split, 16)
    images = rng.integers(0, 256, (n, hw, hw, channels), np.uint8)
    np.savez(folder / f'{split}.npz', image=images, label=labels)
  return folder


def make_config(data_dir, **fields):
  config = config_lib.from_file(CONFIG, 'source=npz,method=ours_ce')
  config.data.dir = str(data_dir)
  for key, value in {**FIELDS, **fields}.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def flags(config):
  """The CLI flags that give ``config`` (the fields this file sets)."""
  out = ['--config=configs/cifar10_lt.py:source=npz,method=ours_ce']
  for key in FIELDS:
    node = config
    for p in key.split('.'):
      node = node[p]
    out.append(f'--config.{key}={node}')
  return out + [f'--config.data.dir={config.data.dir}']


def assert_same_state(dir_a, dir_b):
  (step_a, a), (step_b, b) = load_numpy(dir_a), load_numpy(dir_b)
  assert step_a == step_b
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return write_npz(tmp_path_factory.mktemp('data'))


@pytest.fixture(scope='module')
def finished(tmp_path_factory, data_dir):
  """A finished 16-step run: checkpoints 12, 14 and 16 kept."""
  workdir = tmp_path_factory.mktemp('finished')
  results = train.train_and_evaluate(make_config(data_dir), workdir)
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['12', '14', '16']
  return workdir, results


def damage(step_dir):
  """Truncates the largest array chunk of a checkpoint (in an OCDBT ``d/``
  folder), not a metadata file, which can be larger for a tiny model."""
  files = glob.glob(os.path.join(step_dir, '**', 'd', '*'), recursive=True)
  largest = max((f for f in files if os.path.isfile(f)), key=os.path.getsize)
  with open(largest, 'r+b') as f:
    f.truncate(os.path.getsize(largest) // 3)


@contextlib.contextmanager
def recorded_unraisable(settle_s=1.0):
  """Records the unraisable exceptions raised inside the block, and in the
  ``settle_s`` after it: the debris of a failed read arrives late, from
  TensorStore's threads."""
  unraisable = []
  hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
  try:
    yield unraisable
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
      gc.collect()
      time.sleep(0.05)
  finally:
    sys.unraisablehook = hook


def test_damaged_latest_checkpoint_falls_back_to_the_one_before(
  finished, data_dir, tmp_path, caplog
):
  done, results = finished
  workdir = tmp_path / 'run'
  shutil.copytree(done, workdir)
  os.remove(workdir / 'results.json')
  damage(workdir / 'checkpoints' / '16')
  leftover = workdir / 'checkpoints' / '18.orbax-checkpoint-tmp-1234'
  (leftover / 'default').mkdir(parents=True)  # a kill during a save
  caplog.set_level('INFO')
  with recorded_unraisable() as unraisable:
    again = train.train_and_evaluate(make_config(data_dir), workdir)
  # The failed read's debris (leftover coroutines, reads completing on a
  # closed event loop) was dropped quietly, not printed as "Exception
  # ignored" tracebacks.
  assert not unraisable, [repr(u.exc_value) for u in unraisable]
  log = caplog.text
  assert f'Checkpoint {workdir}/checkpoints/16 could not be read' in log
  # TensorStore's own cause, not orbax's wrapper (a dump of the spec).
  assert 'Error reading' in log and 'See full TensorStore details' not in log
  assert 'Resumed from the checkpoint at step 14' in log
  assert (workdir / 'checkpoints_unreadable' / '16').is_dir()
  assert not leftover.exists()
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['12', '14', '16']
  assert_same_state(done, workdir)  # step 16 trained again, identically
  assert again.pop('run')['resumed_from_step'] == 14  # this call's record
  assert json.loads(json.dumps(again)) == json.loads(
    json.dumps({k: v for k, v in results.items() if k != 'run'})
  )


def test_no_readable_checkpoint_names_the_folders(finished, data_dir, tmp_path):
  done, _ = finished
  workdir = tmp_path / 'run'
  shutil.copytree(done, workdir)
  for step in ('12', '14', '16'):
    damage(workdir / 'checkpoints' / step)
  with recorded_unraisable() as unraisable:
    with pytest.raises(UnreadableCheckpointError) as error:
      train.train_and_evaluate(make_config(data_dir), workdir)
  assert not unraisable, [repr(u.exc_value) for u in unraisable]
  text = str(error.value)
  ckpts = workdir / 'checkpoints'
  assert f'rm -r {ckpts}/16 {ckpts}/14 {ckpts}/12' in text
  assert 'none of the checkpoints' in text and 'fresh --workdir' in text
  assert sorted(os.listdir(ckpts)) == ['12', '14', '16']  # nothing moved


def test_resume_refuses_another_split_and_names_both_digests(
  finished, tmp_path
):
  done, results = finished
  workdir = tmp_path / 'run'
  shutil.copytree(done, workdir)
  os.remove(workdir / 'results.json')
  shutil.rmtree(workdir / 'checkpoints' / '16')  # resume from 14
  moved = write_npz(tmp_path)  # the data moved (allowed on resume) ...
  train_file = np.load(moved / 'train.npz')
  np.savez(  # ... and gained an image: another split
    moved / 'train.npz',
    image=np.concatenate([train_file['image'], train_file['image'][:1]]),
    label=np.concatenate([train_file['label'], train_file['label'][:1]]),
  )
  config = make_config(moved)
  new = datasets.load_array_datasets(config).digest
  with pytest.raises(ValueError, match='another data split') as error:
    train.train_and_evaluate(config, workdir)
  assert results['split_sha256'] in str(error.value) and new in str(error.value)
  assert not (workdir / 'results.json').exists()


def test_resume_refuses_changed_pixels_under_the_same_labels(
  finished, tmp_path
):
  done, results = finished
  workdir = tmp_path / 'run'
  shutil.copytree(done, workdir)
  os.remove(workdir / 'results.json')
  changed = write_npz(tmp_path)
  train_file = dict(np.load(changed / 'train.npz'))
  train_file['image'][-1] ^= 1  # one image, one bit of each value
  np.savez(changed / 'train.npz', **train_file)
  with pytest.raises(ValueError, match='another data split'):
    train.train_and_evaluate(make_config(changed), workdir)


def test_moved_data_with_the_same_split_resumes(finished, tmp_path):
  done, _ = finished
  workdir = tmp_path / 'run'
  shutil.copytree(done, workdir)
  shutil.rmtree(workdir / 'checkpoints' / '16')
  train.train_and_evaluate(make_config(write_npz(tmp_path)), workdir)
  assert_same_state(done, workdir)


def test_grayscale_images_repeat_the_channel(tmp_path):
  gray = write_npz(tmp_path, channels=1)
  data = datasets.load_array_datasets(make_config(gray))
  assert data.image_shape == (16, 16, 3)
  image = np.load(gray / 'dev.npz')['image']
  np.testing.assert_array_equal(data.dev.image[:, ..., 2], image[..., 0])
  results = train.train_and_evaluate(make_config(gray), tmp_path / 'run')
  assert results['seeds'][0]['last']['test']['num_examples'] == 60


def test_splits_of_different_image_sizes_are_refused(tmp_path):
  write_npz(tmp_path, sizes={'test': 24})
  with pytest.raises(ValueError, match='different sizes') as error:
    train.train_and_evaluate(make_config(tmp_path), tmp_path / 'run')
  assert 'train: 16x16, test: 24x24, dev: 16x16' in str(error.value)
  assert not (tmp_path / 'run' / 'checkpoints').exists()


def test_empty_class_message_gives_a_fix_that_works(tmp_path):
  write_npz(tmp_path)
  # 400 images, 2 dev per class: n_max = 18, so imbalance 50 leaves the
  # smallest classes int(18 / 50) = 0 images.
  config = make_config(
    tmp_path, **{'data.imbalance': 50.0, 'data.dev_file': ''}
  )
  config.data.dev_per_class = 2
  train_file = np.load(tmp_path / 'train.npz')
  balanced = np.arange(400) % 20  # every class has 20 images
  np.savez(tmp_path / 'train.npz', image=train_file['image'], label=balanced)
  with pytest.raises(ValueError, match='gets no training images') as error:
    datasets.load_array_datasets(config)
  assert 'config.data.imbalance to at most 18' in str(error.value)
  config.data.imbalance = 18.0
  data = datasets.load_array_datasets(config)
  assert data.class_counts.min() == 1 and data.class_counts.max() == 18


def test_watch_turns_a_signal_into_a_flag_and_a_second_one_acts_as_usual():
  # "As usual": Python's own SIGINT handler, whatever an earlier test left.
  saved = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    _watch_turns_a_signal_into_a_flag_and_a_second_one_acts_as_usual()
  finally:
    signal.signal(signal.SIGINT, saved)


def _watch_turns_a_signal_into_a_flag_and_a_second_one_acts_as_usual():
  before = {s: signal.getsignal(s) for s in preemption.SIGNALS}
  with preemption.Watch() as watch:
    assert not watch.requested(0)
    # A signal is handled between bytecodes of the main thread once the
    # thread the kernel chose has run its C handler: on a loaded machine,
    # some milliseconds later. Wait up to 10 s for each.
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(1000):
      if watch.signum is not None:
        break
      time.sleep(0.01)
    assert watch.requested(1) and watch.signum == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
      for _ in range(1000):
        time.sleep(0.01)
  assert {s: signal.getsignal(s) for s in preemption.SIGNALS} == before
  error = preemption.Preempted(7, signal.SIGTERM, '/ckpt')
  assert error.exit_status == 143
  assert 'resume with the same command' in str(error)


def test_sigterm_checkpoints_the_step_and_resume_matches_uninterrupted(
  data_dir, tmp_path
):
  # 24 epochs (192 steps): long enough to signal mid-run.
  config = make_config(
    data_dir, num_epochs=24, stage2_epoch=12, checkpoint_every_steps=1000
  )
  config.log_every_steps = 1
  uninterrupted = tmp_path / 'uninterrupted'
  train.train_and_evaluate(config, uninterrupted)

  workdir = tmp_path / 'preempted'
  cmd = [sys.executable, '-m', 'ltjax.main', f'--workdir={workdir}']
  cmd += [*flags(config), '--config.log_every_steps=1']
  proc = subprocess.Popen(
    cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
  )
  seen, dumped, deadline = 0, False, time.time() + 300
  while time.time() < deadline and proc.poll() is None and seen < 100:
    if (workdir / 'metrics.jsonl').exists():
      rows = read_jsonl(workdir / 'metrics.jsonl')
      seen = max([r['step'] for r in rows if 'train/loss' in r], default=0)
    if seen >= 50 and not dumped:  # stacks, in stage 1; the run goes on
      proc.send_signal(signal.SIGUSR1)
      dumped = True
    time.sleep(0.01)
  assert proc.poll() is None, 'the run ended before it could be signalled'
  proc.send_signal(signal.SIGTERM)  # inside stage 2, the meta stage
  (stderr,) = communicate_all([proc], 120)
  assert proc.returncode == 143, stderr[-3000:]
  assert dumped and '(most recent call first)' in stderr, stderr[-3000:]
  assert f'{os.sep}ltjax{os.sep}train.py' in stderr  # the main thread's stack
  steps = [int(p) for p in os.listdir(workdir / 'checkpoints') if p.isdigit()]
  # The end of stage 1 (step 96, always kept) and the step in flight.
  steps = sorted(steps)
  assert steps[0] == 96 and len(steps) == 2, steps
  steps = steps[1:]
  assert seen <= steps[0] < 192  # no finished step lost
  assert f'ltjax: preempted by SIGTERM at step {steps[0]}' in stderr
  assert 'resume with the same command' in stderr
  assert 'Traceback' not in stderr

  resumed = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f'Resumed from the checkpoint at step {steps[0]}' in resumed.stderr
  assert_same_state(uninterrupted, workdir)
  ra, rb = (
    json.loads((d / 'results.json').read_text())
    for d in (uninterrupted, workdir)
  )
  assert ra['seeds'] == rb['seeds']


def test_two_processes_stop_at_one_step_when_one_gets_sigterm(
  data_dir, tmp_path
):
  # Two jax.distributed processes on this CPU (gloo collectives), 48 steps;
  # only process 1 is sent SIGTERM: JAX's preemption service makes both
  # checkpoint the same step and stop.
  config = make_config(
    data_dir, num_epochs=6, stage2_epoch=3, checkpoint_every_steps=1000
  )
  workdir = tmp_path / 'two'
  env = {**os.environ, 'JAX_CPU_COLLECTIVES_IMPLEMENTATION': 'gloo'}

  def launch(folder):
    cmd = [sys.executable, '-m', 'ltjax.main', f'--workdir={folder}']
    cmd += [*flags(config), '--config.log_every_steps=1']
    address = f'--coordinator_address=localhost:{free_port()}'
    return [
      subprocess.Popen(
        [*cmd, address, '--num_processes=2', f'--process_id={i}'],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
      )  # fmt: skip
      for i in (0, 1)
    ]

  def finish(procs, status):
    errs = communicate_all(procs, 300)
    assert [p.returncode for p in procs] == [status] * 2, errs[0][-2000:]
    return errs

  procs = launch(workdir)
  seen, deadline = 0, time.time() + 300
  while time.time() < deadline and procs[0].poll() is None and seen < 10:
    if (workdir / 'metrics.jsonl').exists():
      rows = read_jsonl(workdir / 'metrics.jsonl')
      seen = max([r['step'] for r in rows if 'train/loss' in r], default=0)
    time.sleep(0.01)
  assert procs[0].poll() is None, 'the run ended before it could be signalled'
  procs[1].send_signal(signal.SIGTERM)
  errs = finish(procs, 143)
  steps = sorted(
    int(p) for p in os.listdir(workdir / 'checkpoints') if p.isdigit()
  )
  stop = steps[-1]  # and step 24, the end of stage 1, if it was passed
  assert seen <= stop < 48 and set(steps) <= {24, stop}, steps
  for err in errs:
    assert f'ltjax: preempted by SIGTERM at step {stop}' in err

  # Both resume from that checkpoint and end exactly as an uninterrupted
  # two-process run.
  for err in finish(launch(workdir), 0):
    assert f'Resumed from the checkpoint at step {stop}' in err
  finish(launch(tmp_path / 'whole'), 0)
  assert_same_state(tmp_path / 'whole', workdir)


WATCH_CHILD = """
import signal, sys, time
from ltjax import preemption
if sys.argv[1] == 'nohup':
  signal.signal(signal.SIGHUP, signal.SIG_IGN)
else:
  signal.signal(signal.SIGHUP, signal.SIG_DFL)
with preemption.Watch() as watch:
  print('ready', flush=True)
  for step in range(500):
    time.sleep(0.01)
    if watch.requested(step):
      print(f'stop {signal.Signals(watch.signum).name}', flush=True)
      sys.exit(3)
print('ran to the end', flush=True)
"""


@pytest.mark.parametrize('mode', ['plain', 'nohup'])
def test_sighup_stops_like_sigterm_unless_ignored(mode):
  proc = subprocess.Popen(
    [sys.executable, '-c', WATCH_CHILD, mode],
    stdout=subprocess.PIPE,
    text=True,
  )
  assert proc.stdout.readline().strip() == 'ready'
  proc.send_signal(signal.SIGHUP)
  out = proc.communicate(timeout=60)[0]
  if mode == 'plain':  # a dropped ssh session: checkpoint and stop
    assert proc.returncode == 3 and 'stop SIGHUP' in out
  else:  # nohup: the run goes on
    assert proc.returncode == 0 and 'ran to the end' in out


def test_a_workdir_with_no_checkpoint_takes_any_config(tmp_path, caplog):
  from ltjax import resume
  from ltjax.checkpoint import Checkpointer

  caplog.set_level('WARNING')
  config = make_config(tmp_path)
  (tmp_path / 'config.json').write_text('{"batch_size": 1')  # damaged
  resume.check_workdir(config, tmp_path)
  assert 'config.json is damaged; it is replaced' in caplog.text
  config.seed = 3  # the run stopped before its first checkpoint: any fix
  Checkpointer(tmp_path).close()  # an empty checkpoints/ folder
  resume.check_workdir(config, tmp_path)
  assert 'has no checkpoint, so any config may start it' in caplog.text
  assert json.loads((tmp_path / 'config.json').read_text())['seed'] == 3


def test_a_resume_without_config_json_under_another_method_is_refused(
  finished, data_dir, tmp_path
):
  done, _ = finished
  workdir = tmp_path / 'run'
  shutil.copytree(done, workdir)
  for name in ('config.json', 'results.json'):
    os.remove(workdir / name)
  shutil.rmtree(workdir / 'checkpoints' / '16')
  from ltjax.resume import ResumeConfigError

  with pytest.raises(
    ResumeConfigError,
    match=r'checkpoint at step 14 \(epoch 1.75\) was trained with method '
    r"'ours_ce' -> 'ce'. At a checkpoint of stage 2 only",
  ):
    train.train_and_evaluate(make_config(data_dir, method='ce'), workdir)
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['12', '14']


def test_a_checkpoint_of_an_older_ltjax_is_checked_against_config_json(
  finished, data_dir, tmp_path
):
  from ltjax.resume import ResumeConfigError

  done, _ = finished
  workdir = tmp_path / 'run'
  shutil.copytree(done, workdir)
  for step in ('12', '14', '16'):  # as an older ltjax wrote them
    path = workdir / 'checkpoints' / step / '_CHECKPOINT_METADATA'
    meta = json.loads(path.read_text())
    meta['custom_metadata'] = {'split_sha256': 'x' * 64}
    path.write_text(json.dumps(meta))
  with pytest.raises(
    ResumeConfigError, match=r'config.json was trained with seed 0 -> 3'
  ):
    train.train_and_evaluate(make_config(data_dir, seed=3), workdir)
  (workdir / 'config.json').write_text('{"batch_size": 1')
  with pytest.raises(
    ResumeConfigError, match=r'config.json is damaged .* delete it if this'
  ):
    train.train_and_evaluate(make_config(data_dir), workdir)


def test_a_diverged_stage_2_reruns_from_the_end_of_stage_1_with_the_advice(
  finished, data_dir, tmp_path
):
  done, results = finished
  workdir = tmp_path / 'run'
  with pytest.raises(FloatingPointError) as error:
    train.train_and_evaluate(make_config(data_dir, eps_lr=1e6), workdir)
  text = str(error.value)
  assert (
    '(epoch 1, stage 2: ours); stopped. Its rates: eps_lr=1e+06, the learning rate 0.1'
    in text
  )
  assert (
    'in the same --workdir: stage 2 restarts from the checkpoint at step 8'
    in text
  )
  assert sorted(os.listdir(workdir / 'checkpoints_diverged')) == ['10']
  # The advice taken, in the same workdir: exactly the run that used the
  # lower rate from the start.
  again = train.train_and_evaluate(make_config(data_dir), workdir)
  assert again.pop('run')['resumed_from_step'] == 8
  assert_same_state(done, workdir)
  assert json.loads(json.dumps(again)) == json.loads(
    json.dumps({k: v for k, v in results.items() if k != 'run'})
  )


def test_a_diverged_stage_1_names_its_rate_and_a_fresh_workdir(
  data_dir, tmp_path
):
  with pytest.raises(FloatingPointError) as error:
    train.train_and_evaluate(make_config(data_dir, learning_rate=1e8), tmp_path)
  text = str(error.value)
  assert (
    'stage 1: plain); stopped. Its rates: the learning rate 1e+08 (learning_rate'
    in text
  )
  assert 'rerun with a lower rate' in text and 'step None' not in text


HOLDER = """
import sys, time
from ltjax.workdir_lock import WorkdirLock
with WorkdirLock(sys.argv[1]):
  print('holding', flush=True)
  time.sleep(300)
"""


def test_a_busy_workdir_is_refused_and_a_dead_runs_lock_taken_over(
  data_dir, tmp_path, caplog
):
  from ltjax.workdir_lock import WorkdirBusyError, WorkdirLock

  workdir = tmp_path / 'run'
  holder = subprocess.Popen(
    [sys.executable, '-c', HOLDER, str(workdir)],
    stdout=subprocess.PIPE,
    text=True,
  )
  try:
    assert holder.stdout.readline().strip() == 'holding'
    with pytest.raises(
      WorkdirBusyError,
      match=rf'in use by another run \(pid {holder.pid} on .+, started ',
    ):
      train.train_and_evaluate(make_config(data_dir), workdir)
    assert not (workdir / 'config.json').exists()  # refused before anything
  finally:
    holder.kill()
    holder.wait()
  caplog.set_level('WARNING')
  with WorkdirLock(workdir):
    pass
  assert (
    f'Took over the lock of {workdir} left by a run that is no longer running (pid {holder.pid}'
    in caplog.text
  )
  with WorkdirLock(workdir):  # released cleanly last time: nothing to say
    pass
  assert caplog.text.count('Took over') == 1
