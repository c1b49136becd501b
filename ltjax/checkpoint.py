"""Orbax checkpoints of a run: periodic saves, keep the last few, resume.

Orbax writes each checkpoint to a temporary folder and renames it into place
when complete, so a crash mid-save leaves the previous checkpoints intact and
:meth:`Checkpointer.restore_latest` never sees a half-written one; the
temporary folders such a crash leaves are removed when the next run starts.

A checkpoint damaged on disk afterwards (a truncated or lost file) is
reported by path and the next older one is tried; the unreadable ones are
moved aside to ``workdir/checkpoints_unreadable/`` (not deleted) once an
older one reads, so that the run overwrites none of them and keeps its
``keep_checkpoints`` good ones. When none reads, nothing is moved and the
error names the folders.
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import traceback

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from ltjax.errors import MissingFileError, UnreadableCheckpointError


def _is_read_leftover(unraisable) -> bool:
  """Whether an unraisable exception is the debris of a failed orbax read.

  Orbax runs a restore on a fresh event loop and closes it when the first
  read fails, while the other reads are still in flight. Two kinds of debris
  follow, each printed as an "Exception ignored" traceback long after the
  one-line warning that said what failed: the abandoned coroutines raise
  ``GeneratorExit`` when garbage-collected (frames in orbax), and each
  TensorStore read that completes later, on TensorStore's own thread, finds
  its event loop closed (``RuntimeError('Event loop is closed')`` from
  ``call_soon_threadsafe``, no orbax frame).
  """
  frames = traceback.extract_tb(unraisable.exc_traceback)
  if any(f'{os.sep}orbax{os.sep}' in f.filename for f in frames):
    return True
  return (
    unraisable.exc_type is RuntimeError
    and str(unraisable.exc_value) == 'Event loop is closed'
    and bool(frames)
    and frames[-1].name == '_check_closed'
    and f'{os.sep}asyncio{os.sep}' in frames[-1].filename
  )


def _without_read_leftovers(hook):
  """``hook``, minus the debris of failed reads (only that: any other
  unraisable exception reaches ``hook``)."""
  if getattr(hook, 'ltjax_drops_read_leftovers', False):
    return hook

  def filtered(unraisable):
    if not _is_read_leftover(unraisable):
      hook(unraisable)

  filtered.ltjax_drops_read_leftovers = True
  return filtered


def step_of(state) -> int:
  """The step of a state (with vectorized seeds, the step they share)."""
  return int(np.max(jax.device_get(state.step)))


class Checkpointer:
  """Checkpoints of a :class:`ltjax.train_step.TrainState` in ``workdir``.

  ``metadata`` (a JSON-able dict, e.g. the split digest) is stored with
  every checkpoint; :meth:`metadata` reads it back.
  """

  def __init__(self, workdir, max_to_keep: int = 3, metadata=None):
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, 'checkpoints')
    self._metadata = dict(metadata or {})
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True
      ),
      item_handlers=ocp.StandardCheckpointHandler(),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def metadata(self, step: int) -> dict:
    """What was stored with the checkpoint at ``step`` (``{}``: nothing)."""
    return dict(self._manager.metadata(step).custom_metadata or {})

  def save(self, state, *, force: bool = False) -> None:
    step = step_of(state)
    if step in self._manager.all_steps():
      return
    self._manager.save(
      step,
      args=ocp.args.StandardSave(state),
      force=force,
      custom_metadata=self._metadata,
    )

  def restore_latest(self, template):
    """The newest readable checkpoint, shaped, typed and sharded like
    ``template``, or like ``template(step)`` when it is a function (a state
    whose structure changes with the stage).

    Raises:
      UnreadableCheckpointError: no kept checkpoint could be read.
    """
    # A failed read leaves debris (see _is_read_leftover): the coroutines
    # are collected here, quietly; the TensorStore reads still in flight
    # complete at a time no one controls, so once a read has failed the
    # filter stays on sys.unraisablehook for the rest of the process.
    previous = sys.unraisablehook
    sys.unraisablehook = _without_read_leftovers(previous)
    failed = []
    try:
      return self._restore_latest(template, failed)
    finally:
      gc.collect()
      if not failed:
        sys.unraisablehook = previous

  def _restore_latest(self, template, failed):
    """Tries the kept checkpoints, newest first; appends each unreadable
    one to ``failed`` as ``(step, cause)``."""
    template_of = template if callable(template) else lambda step: template
    for step in sorted(self._manager.all_steps(), reverse=True):
      abstract = jax.tree.map(
        ocp.utils.to_shape_dtype_struct, template_of(step)
      )
      unseeded = self._without_seed_axis(step, abstract)
      try:
        state = self._manager.restore(
          step, args=ocp.args.StandardRestore(unseeded or abstract)
        )
        if unseeded:
          state = jax.tree.map(
            lambda x, t: jax.device_put(x[None], t.sharding), state, abstract
          )
      except Exception as error:  # noqa: BLE001 (TensorStore raises Exception)
        cause = _root_cause(error)
        logging.warning(
          'Checkpoint %s could not be read (%s); trying the one before.',
          self.step_dir(step), cause,
        )  # fmt: skip
        failed.append((step, cause))
        continue
      if failed:
        self.move_aside([s for s, _ in failed], 'checkpoints_unreadable')
      return state
    folders = ' '.join(self.step_dir(s) for s, _ in failed)
    step, cause = failed[0]
    raise UnreadableCheckpointError(
      f'none of the checkpoints in {self.directory} could be read (the '
      f'newest, step {step}: {cause}). If the code and config are those '
      f'that wrote them, they are damaged: remove them (rm -r {folders}) '
      f'to train that run again from the start, or use a fresh --workdir.'
    )

  def _without_seed_axis(self, step, abstract):
    """``abstract`` without its seed axis when the checkpoint at ``step``
    was written before states had one (ltjax before 2026-12-05: one seed,
    a scalar ``step``), else None; the caller puts the axis back."""
    try:
      stored = self._manager.item_metadata(step)['step'].shape
    except Exception:  # noqa: BLE001 (unreadable: the restore will say why)
      return None
    if stored != () or abstract.step.shape != (1,):
      return None
    logging.warning(
      'The checkpoint at step %d has no seed axis (an older ltjax wrote '
      'it): restored as seed 0 of one.', step,
    )  # fmt: skip
    return jax.tree.map(
      lambda t: jax.ShapeDtypeStruct(t.shape[1:], t.dtype, sharding=t.sharding),
      abstract,
    )

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def move_aside(self, steps, folder: str) -> str:
    """Moves the checkpoints at ``steps`` out of orbax's sight, into
    ``workdir/folder`` (process 0; nothing is deleted), and returns it."""
    aside = os.path.join(self.workdir, folder)
    if jax.process_index() == 0:
      os.makedirs(aside, exist_ok=True)
      for step in steps:
        target = os.path.join(aside, str(step))
        while os.path.exists(target):
          target += '_'
        shutil.move(self.step_dir(step), target)
        logging.warning('Moved the checkpoint at step %d to %s.', step, target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('ltjax_checkpoints_moved_aside')
    self._manager.reload()
    return aside

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def _short(error: BaseException, limit: int = 300) -> str:
  text = ' '.join(str(error).split())
  return text if len(text) <= limit else text[:limit] + '...'


def _root_cause(error: BaseException) -> str:
  """``'Type: message'`` of the innermost exception ``error`` was raised
  from: orbax wraps TensorStore's precise one (``OUT_OF_RANGE: Error
  reading "params..." ...: Requested byte range ... is not valid``) in a
  generic one whose text is mostly a dump of the TensorStore spec."""
  while error.__cause__ is not None:
    error = error.__cause__
  return f'{type(error).__name__}: {_short(error)}'


def load_numpy(workdir, step: int | None = None):
  """``(step, state)``: a checkpoint of ``workdir`` as a tree of NumPy arrays.

  Needs no template and works whatever device topology saved it, e.g. to
  inspect or compare finished runs. ``step`` defaults to the latest.
  """
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  steps = sorted(int(p) for p in os.listdir(directory) if p.isdigit())
  if not steps:
    raise MissingFileError(f'no finished checkpoint in {directory}.')
  step = steps[-1] if step is None else step
  path = os.path.join(directory, str(step), 'default')
  checkpointer = ocp.PyTreeCheckpointer()
  tree = checkpointer.metadata(path).item_metadata.tree
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  state = checkpointer.restore(
    path, args=ocp.args.PyTreeRestore(restore_args=args)
  )
  return step, state
