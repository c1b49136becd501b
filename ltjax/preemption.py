"""Preemption: SIGTERM, SIGINT or SIGHUP stop a run at a step boundary,
checkpointed.

Clusters preempt jobs with SIGTERM and a grace period. :class:`Watch` turns
the signal into a flag that the training loop reads after every step: the
step in flight finishes, a checkpoint is written, and
:func:`ltjax.train.train_and_evaluate` raises :class:`Preempted`, which the
CLI prints as one line and turns into exit status ``128 + signal`` (143 for
SIGTERM, 130 for SIGINT, 129 for SIGHUP: a dropped ssh session; a process
that ignores SIGHUP, as under ``nohup``, keeps ignoring it). Resuming with the same command continues from
that step, exactly as if the run had not stopped. A second signal acts as
it would have without ltjax (SIGTERM kills, SIGINT raises
``KeyboardInterrupt``).

Multi-process runs (``jax.distributed`` initialized) must stop at the same
step on every process: there JAX's preemption service, which watches
SIGTERM on every process, picks the step and
``jax.experimental.multihost_utils.reached_preemption_sync_point`` reports
it, so no Python handler replaces JAX's.
"""

from __future__ import annotations

import signal
import threading

import jax
from absl import logging
from jax._src import distributed  # whether jax.distributed is initialized
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Preempted(Exception):
  """A run stopped by a signal after checkpointing ``step``."""

  def __init__(self, step: int, signum: int, directory: str):
    self.step, self.signum, self.directory = step, signum, directory
    name = signal.Signals(signum).name
    super().__init__(
      f'preempted by {name} at step {step}: the checkpoint of that step is '
      f'in {directory}; resume with the same command.'
    )

  @property
  def exit_status(self) -> int:
    return 128 + self.signum


def _distributed() -> bool:
  return distributed.global_state.client is not None


class Watch:
  """A context manager: inside it, :meth:`requested` says whether to stop
  after ``step``. Handlers are installed only from the main thread (the
  only one Python lets set them) and restored on exit."""

  def __init__(self):
    self.signum: int | None = None
    self._previous: dict = {}
    self._sync = jax.process_count() > 1 and _distributed()

  def __enter__(self):
    if not self._sync and threading.current_thread() is threading.main_thread():
      for signum in SIGNALS:
        if signum == signal.SIGHUP and signal.getsignal(signum) is signal.SIG_IGN:
          continue  # ignored on purpose (nohup): left so
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    self._previous.clear()

  def _handle(self, signum, frame) -> None:
    del frame
    self.signum = signum
    previous = self._previous.pop(signum)  # a second signal: as usual
    signal.signal(signum, signal.SIG_DFL if previous is None else previous)
    logging.warning(
      'Received %s: finishing the step in flight, then writing a '
      'checkpoint (send it again to stop at once).',
      signal.Signals(signum).name,
    )

  def requested(self, step: int) -> bool:
    """Whether to checkpoint and stop after ``step`` (every process calls
    it with the same steps)."""
    if self._sync:
      if multihost_utils.reached_preemption_sync_point(step):
        self.signum = signal.SIGTERM
        return True
      return False
    return self.signum is not None
