"""A run's records: scalars, progress lines and evaluations.

Scalars go to a JSON-lines file and to TensorBoard event files
(:class:`MetricWriter`), the periodic progress line to the log
(:class:`Progress`), and the evaluations to ``evals.jsonl``
(:func:`write_evals`, read back on resume by :func:`read_evals`).

The event files are written through tensorboardX (tensorboardX,
https://github.com/lanpa/tensorboardX), so logging needs neither TensorFlow
nor TensorBoard installed; ``tensorboard --logdir=WORKDIR`` reads them. A
run killed without ``close()`` keeps the events of all but about its last
second of writes (the jsonl file keeps every row).
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import numpy as np
from absl import logging

from ltjax import evaluate, files
from ltjax.errors import DamagedRecordError


def _import_tensorboardx():
  """tensorboardX, without importing PyTorch.

  Where PyTorch is installed, tensorboardX's writer imports it only to
  accept torch tensors as values, which ltjax never logs: 1.3 s of every
  run's start on a 2-CPU AMD EPYC (``python -X importtime``, torch 2.13).
  While tensorboardX is imported, ``import torch`` fails (tensorboardX
  catches that); it works again afterwards.
  """
  block = 'torch' not in sys.modules
  if block:
    sys.modules['torch'] = None  # an import of torch raises ImportError
  try:
    import tensorboardX  # noqa: PLC0415
  finally:
    if block:
      del sys.modules['torch']
  return tensorboardX


tensorboardX = _import_tensorboardx()


def _unused_suffix(logdir) -> str:
  """An event-file name suffix that no file in ``logdir`` ends with yet.

  tensorboardX names its file ``events.out.tfevents.<seconds>.<host><suffix>``
  and opens it with ``'wb'``: without a suffix, a writer opened in the same
  second as an earlier one (a quick resume) would truncate that one's file.
  Nanoseconds keep the names of one second in the order they were written.
  """
  names = os.listdir(logdir) if os.path.isdir(logdir) else []
  ns = time.time_ns()
  while any(n.endswith(f'.{ns}') for n in names):
    ns += 1
  return f'.{ns}'


class MetricWriter:
  """Writes scalars to ``workdir/metrics.jsonl`` and TensorBoard events.

  Only process 0 should create one. A resumed run appends; records of steps
  after the restored checkpoint are dropped first, so the file describes
  one uninterrupted run. Event files are not rewritten: a resumed run adds
  a new one under ``workdir/tensorboard/`` beside the earlier ones.
  """

  def __init__(self, workdir, resume_step: int = 0):
    self.path = os.path.join(workdir, 'metrics.jsonl')
    if os.path.exists(self.path):
      keep = [r for r in read_jsonl(self.path) if r['step'] <= resume_step]
      files.write_text(self.path, ''.join(json.dumps(r) + '\n' for r in keep))
    self._jsonl = open(self.path, 'a')  # noqa: SIM115
    logdir = os.path.join(workdir, 'tensorboard')
    # tensorboardX queues events for a background thread, so flush() after
    # add_scalar can run before the thread has written them; flush_secs=1 has
    # the thread flush them itself within a second of each write.
    self._events = tensorboardX.SummaryWriter(
      logdir, flush_secs=1, filename_suffix=_unused_suffix(logdir)
    )

  def write(self, step: int, scalars: dict[str, float]) -> None:
    scalars = {k: float(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({'step': int(step), **scalars}) + '\n')
    self._jsonl.flush()
    for tag, value in scalars.items():
      self._events.add_scalar(tag, value, global_step=int(step))
    self._events.flush()

  def close(self) -> None:
    self._jsonl.close()
    self._events.close()


def read_jsonl(path) -> list[dict]:
  """The rows of a JSON-lines record file.

  A last line cut short (a kill or a full disk in the middle of a write) is
  dropped with a warning naming the file: the rows before it are whole. A
  damaged line before the last is not a torn write, and is refused with
  the file, the line and what to do.
  """
  with open(path) as f:
    lines = [(i + 1, r) for i, r in enumerate(f) if r.strip()]
  rows = []
  for k, (number, line) in enumerate(lines):
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError as error:
      if k == len(lines) - 1 and not line.endswith('\n'):
        logging.warning(
          'Dropped the last line of %s (line %d), cut short by an '
          'interrupted write; the %d rows before it are kept.',
          path, number, len(rows),
        )  # fmt: skip
        break
      raise DamagedRecordError(
        f'{path}, line {number}, is damaged ({error.msg}): it is not a '
        f'write cut short. Remove that line (or the file, if the run is to '
        f'be trained again) and resume.'
      ) from None
  return rows


def read_evals(workdir, start_step) -> list[list[dict]]:
  """The evaluations of ``workdir/evals.jsonl`` up to ``start_step``."""
  path = os.path.join(workdir, 'evals.jsonl')
  if not os.path.exists(path):
    return []
  rows = read_jsonl(path)
  return [evaluate.row_records(r) for r in rows if r['step'] <= start_step]


def write_evals(workdir, evals) -> None:
  files.write_text(
    os.path.join(workdir, 'evals.jsonl'),
    ''.join(json.dumps(evaluate.eval_row(r)) + '\n' for r in evals),
  )


class Progress:
  """The periodic log line and scalars: loss, lr, images/s, time left.

  The time left counts each stage's steps at that stage's own measured
  time per step (a meta step costs a few plain ones); a stage not timed
  yet is counted at the other's, and the line says so.
  """

  def __init__(
    self, images_per_step, start_step, total_steps, steps_per_epoch,
    stage2_step=None,
  ):  # fmt: skip
    self._images = images_per_step
    self._total, self._spe = total_steps, steps_per_epoch
    self._stage2 = total_steps if stage2_step is None else stage2_step
    self._t, self._step = time.perf_counter(), start_step
    self._seconds = {}  # stage -> seconds per step, latest interval

  def _left(self, done) -> tuple[float, str]:
    remaining = {
      1: max(self._stage2 - done, 0),
      2: self._total - max(done, self._stage2),
    }
    known = next(iter(self._seconds.values()))
    untimed = [s for s, n in remaining.items() if n and s not in self._seconds]
    seconds = sum(n * self._seconds.get(s, known) for s, n in remaining.items())
    note = f' (stage {untimed[0]} not timed yet)' if untimed else ''
    return seconds, note

  def __call__(self, done, stage, metrics) -> dict:
    now = time.perf_counter()
    self._seconds[stage] = (now - self._t) / max(done - self._step, 1)
    rate = self._images / self._seconds[stage]
    scalars = {k: float(np.mean(v)) for k, v in jax.device_get(metrics).items()}
    scalars['images_per_second'] = rate
    eta, note = self._left(done)
    logging.info(
      'step %d/%d epoch %.1f stage %d loss %.4f lr %.3g %.0f img/s, '
      '%.0f s left%s',
      done, self._total, done / self._spe, stage, scalars['train/loss'],
      scalars['learning_rate'], rate, eta, note,
    )  # fmt: skip
    self._t, self._step = now, done
    return scalars
