"""Helpers for tests that run ltjax in several processes."""

import signal
import socket
import subprocess
import time

import pytest


def free_port() -> int:
  """A localhost port free now (a coordinator binds it a moment later)."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def communicate_all(procs, timeout):
  """Each process's stderr once all have ended. Processes still running
  after ``timeout`` seconds each are stopped, and the test fails with what
  each was doing: its Python stacks (SIGUSR1, which ``ltjax.main`` and
  ``tests/multiprocess_run.py`` answer with ``faulthandler``) and the end
  of its stderr."""
  try:
    return [p.communicate(timeout=timeout)[1] for p in procs]
  except subprocess.TimeoutExpired:
    pass
  for p in procs:
    if p.poll() is None:
      p.send_signal(signal.SIGUSR1)
  time.sleep(2)
  for p in procs:
    p.kill()
  tails = [
    f'process {i} (exit {p.wait()}):\n{p.communicate()[1][-4000:]}'
    for i, p in enumerate(procs)
  ]
  pytest.fail(
    f'the processes ran past {timeout} s (a hang?):\n' + '\n'.join(tails)
  )
