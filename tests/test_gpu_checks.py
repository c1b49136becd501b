"""benchmarks/gpu_checks.sh: its commands parse, and it runs without TF.

The script is for a GPU machine; here it runs on CPU, once with a stand-in
for Python that records each command (every benchmark's argument parser
must accept it, at both scales), and once for real on its smallest step,
with TensorFlow made unimportable as on the GPU machine.
"""

import os
import pathlib
import shlex
import shutil
import subprocess
import sys

import pytest

from benchmarks import epoch, meta_step, train_run

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / 'benchmarks' / 'gpu_checks.sh'
PARSERS = {
  'benchmarks.meta_step': meta_step.parse_args,
  'benchmarks.train_run': train_run.parse_args,
  'benchmarks.epoch': epoch.parse_args,
}

pytestmark = pytest.mark.skipif(
  shutil.which('bash') is None or shutil.which('timeout') is None,
  reason='needs bash and timeout',
)


def run_script(tmp_path, env, *args):
  return subprocess.run(
    ['bash', str(SCRIPT), str(tmp_path / 'out'), *args],
    cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True,
    timeout=600,
  )  # fmt: skip


@pytest.mark.parametrize('scale', ['full', 'smoke'])
def test_every_command_parses(tmp_path, scale):
  log = tmp_path / 'commands'
  fake = tmp_path / 'python'
  fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\n')
  fake.chmod(0o755)
  proc = run_script(tmp_path, {'PYTHON': str(fake), 'SCALE': scale}, 'DATA')
  assert proc.returncode == 0, proc.stderr
  commands = [shlex.split(c) for c in log.read_text().splitlines()]
  modules = [c[1] for c in commands if c[0] == '-m']
  assert modules == [
    'benchmarks.meta_step',
    'benchmarks.train_run',
    'benchmarks.train_run',  # precision: float32 and bfloat16
    'benchmarks.train_run',
    'benchmarks.epoch',
  ]
  for c in commands:
    if c[0] == '-m':
      PARSERS[c[1]](c[2:])  # SystemExit on a flag the benchmark lacks
  assert '--data_dir=DATA' in commands[3]  # [0] is the machine line
  assert '--dtypes=float32,bfloat16' in commands[3]
  for name in ('meta_step', 'seeds', 'precision', 'whole_run', 'epoch'):
    assert f'== {name}: rc=0' in proc.stdout


def test_steps_selects_and_no_data_skips_precision(tmp_path):
  log = tmp_path / 'commands'
  fake = tmp_path / 'python'
  fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\n')
  fake.chmod(0o755)
  env = {'PYTHON': str(fake), 'STEPS': 'precision whole_run'}
  proc = run_script(tmp_path, env)
  assert proc.returncode == 0, proc.stderr
  modules = [
    c.split()[1] for c in log.read_text().splitlines() if c[:2] == '-m'
  ]
  # No DATA_DIR: no precision, only the whole run.
  assert (
    modules == ['benchmarks.train_run'] and '--dtypes' not in log.read_text()
  )


def test_runs_without_tensorflow(tmp_path):
  blocker = tmp_path / 'blocked'
  for name in ('tensorflow', 'tensorflow_datasets'):
    (blocker / name).mkdir(parents=True)
    (blocker / name / '__init__.py').write_text(
      f'raise ImportError("{name} is not installed (test)")\n'
    )
  path = os.pathsep.join([str(blocker), str(REPO)])
  env = {
    'PYTHON': sys.executable,
    'SCALE': 'smoke',
    'STEPS': 'meta_step',
    'PYTHONPATH': path,
  }
  proc = run_script(tmp_path, env)
  assert proc.returncode == 0, proc.stderr
  assert '== meta_step: rc=0' in proc.stdout, proc.stdout
  table = (tmp_path / 'out' / 'meta_step.txt').read_text()
  assert '| meta | ltjax |' in table and '| meta | torch |' in table
  assert 'torch on cpu' in table
