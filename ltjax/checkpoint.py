"""Orbax checkpoints of a run: periodic saves, keep the last few, resume.

Orbax writes each checkpoint to a temporary folder and renames it into place
when complete, so a crash mid-save leaves the previous checkpoints intact and
:meth:`Checkpointer.restore_latest` never sees a half-written one.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp


def step_of(state) -> int:
  """The step of a state (with vectorized seeds, the step they share)."""
  return int(np.max(jax.device_get(state.step)))


class Checkpointer:
  """Checkpoints of a :class:`ltjax.train_step.TrainState` in ``workdir``."""

  def __init__(self, workdir, max_to_keep: int = 3):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True
      ),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, state, *, force: bool = False) -> None:
    step = step_of(state)
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.StandardSave(state), force=force)

  def restore_latest(self, template):
    """The latest checkpoint shaped, typed and sharded like ``template``."""
    step = self.latest_step()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def load_numpy(workdir, step: int | None = None):
  """``(step, state)``: a checkpoint of ``workdir`` as a tree of NumPy arrays.

  Needs no template and works whatever device topology saved it, e.g. to
  inspect or compare finished runs. ``step`` defaults to the latest.
  """
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  steps = sorted(int(p) for p in os.listdir(directory) if p.isdigit())
  if not steps:
    raise FileNotFoundError(f'no finished checkpoint in {directory}.')
  step = steps[-1] if step is None else step
  path = os.path.join(directory, str(step), 'default')
  checkpointer = ocp.PyTreeCheckpointer()
  tree = checkpointer.metadata(path).item_metadata.tree
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  state = checkpointer.restore(
    path, args=ocp.args.PyTreeRestore(restore_args=args)
  )
  return step, state
