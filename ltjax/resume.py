"""What may change when a run resumes: each checkpoint carries its config.

Every checkpoint stores, beside the split digest, the config that trained it
(:func:`fingerprint`: every field but :data:`RESUMABLE_FIELDS`) and the
steps per epoch. A resume compares the new config with the checkpoint's,
not with ``workdir/config.json`` (a record of the last start, which a copy
of the workdir may lose), and refuses a difference that would change what
the checkpoint computed (:func:`conflicts`):

- at a **stage-1 checkpoint** (its epoch at most ``stage2_epoch`` in both
  configs) what only stage 2 reads may change: ``method``, within the same
  loss and stage 1 (``ce`` → ``ours_ce``, ``crt``, ...); the hyperparameters
  of the stage tables that stage 1 does not read (``eps_lr``,
  ``classifier_lr``, ...); ``num_epochs`` and ``stage2_epoch``; and the
  learning-rate schedule (:data:`SCHEDULE_FIELDS`: ``learning_rate`` and its
  scaling with the batch size, ``lr_boundaries``, ``lr_decay``,
  ``warmup_epochs``) as long as it gives the same rate to every epoch
  trained so far. This is what lets a stage-1 prefix be shared by several
  methods, and a diverged stage 2 restart from its start with a lower rate;
- at a **stage-2 checkpoint**, only :data:`RESUMABLE_FIELDS`;
- a workdir with **no checkpoint** accepts any config (the log says so).
"""

from __future__ import annotations

import json
import math
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ltjax import files, methods, train_step
from ltjax.checkpoint import Checkpointer
from ltjax.errors import ResumeConfigError

# Fields that may change between a run and its resumption (the data may
# move: the digest stored with each checkpoint guards the split and, for
# array data, its pixels).
RESUMABLE_FIELDS = (
  'log_every_steps',
  'checkpoint_every_steps',
  'keep_checkpoints',
  'data.dir',
  'data.tfds_data_dir',
  'data.cache_dir',
  'data.name',
)
# The fields of the step learning-rate schedule (compared through the rate
# they give each epoch trained so far; the rate also reads batch_size, which
# stays compared field by field).
SCHEDULE_FIELDS = (
  'learning_rate',
  'scale_lr_with_batch',
  'reference_batch_size',
  'lr_boundaries',
  'lr_decay',
  'warmup_epochs',
)
# Fields no step of stage 1 reads (given that the stage-1 epochs are done).
STAGE_LENGTH_FIELDS = ('num_epochs', 'stage2_epoch')


def flat(tree: dict, prefix: str = '') -> dict:
  """``{'a': {'b': 1}}`` -> ``{'a.b': 1}``."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def as_json(config) -> dict:
  """The config as its JSON record (``config.json``) reads it back."""
  return json.loads(config.to_json_best_effort())


def fingerprint(config) -> dict:
  """The flat config a checkpoint stores: every field but the resumable
  ones, as JSON values."""
  return {
    k: v for k, v in flat(as_json(config)).items() if k not in RESUMABLE_FIELDS
  }


def older_record(saved: dict) -> dict:
  """``saved`` (a :func:`fingerprint`) with the fields that an ltjax older
  than them did not record, set to what that ltjax did: it trained at
  ``learning_rate`` whatever the batch size, the scaled rate of
  ``reference_batch_size = batch_size``."""
  if 'scale_lr_with_batch' in saved or 'batch_size' not in saved:
    return saved
  return {
    'scale_lr_with_batch': True,
    'reference_batch_size': saved['batch_size'],
    **saved,
  }


def epoch_rates(fields: dict, epochs: int) -> list[float]:
  """The step schedule's learning rate in each of the first ``epochs``
  epochs: :func:`ltjax.train_step.learning_rate_fn` itself, at one step
  per epoch, of the schedule's fields and ``batch_size`` in ``fields`` (a
  flat config; the batch-size fields may be missing: no scaling)."""
  scaling = ('scale_lr_with_batch', 'reference_batch_size', 'batch_size')
  schedule = types.SimpleNamespace(
    **{k: fields[k] for k in SCHEDULE_FIELDS if k not in scaling},
    **{k: fields.get(k) for k in scaling},
  )
  lr = train_step.learning_rate_fn(schedule, 1)
  return np.asarray(jax.vmap(lr)(jnp.arange(epochs))).tolist()


def _stage1(method_name: str):
  method = methods.get_method(method_name)
  return method.loss, method.stage1


def in_stage1(saved: dict, new: dict, epoch: float | None) -> bool:
  """Whether a checkpoint at ``epoch`` lies in stage 1 of both configs."""
  return epoch is not None and epoch <= min(
    saved.get('stage2_epoch', -1), new['stage2_epoch']
  )


def conflicts(saved: dict, config, epoch: float | None) -> list[str]:
  """The fields of ``config`` that may not differ from ``saved`` (a
  :func:`fingerprint`) at a checkpoint ``epoch`` epochs into the run (None:
  unknown, compared as stage 2), sorted."""
  saved = older_record(saved)
  new = fingerprint(config)
  keys = set(saved) | set(new)
  if not in_stage1(saved, new, epoch):
    return sorted(k for k in keys if saved.get(k) != new.get(k))
  # A stage-1 checkpoint: what stage 2 alone reads may change.
  stage1_reads = set(
    methods.STAGES[_stage1(new['method'])[1]].hyperparameters
  )
  free = set(STAGE_LENGTH_FIELDS) | set(SCHEDULE_FIELDS) | {'method'}
  free |= set(methods.stage_fields()) - stage1_reads
  out = {k for k in keys - free if saved.get(k) != new.get(k)}
  if saved.get('method') != new['method'] and (
    saved.get('method') not in methods.METHODS
    or _stage1(saved['method']) != _stage1(new['method'])
  ):
    out.add('method')
  trained = math.ceil(epoch)
  if any(k not in saved for k in SCHEDULE_FIELDS) or epoch_rates(
    saved, trained
  ) != epoch_rates(new, trained):
    out |= {k for k in SCHEDULE_FIELDS if saved.get(k) != new.get(k)}
  return sorted(out)


def may_change(saved: dict, config, epoch: float | None) -> str:
  """What the refusal says may change at this checkpoint."""
  resumable = ', '.join(RESUMABLE_FIELDS)
  if not in_stage1(saved, fingerprint(config), epoch):
    return (
      f'at a checkpoint of stage 2 only {resumable} may change; to change '
      f'a stage-2 field, resume from a checkpoint of stage 1 (at most epoch '
      f'stage2_epoch)'
    )
  return (
    f'at a checkpoint of stage 1 (epoch {epoch:g}) what only stage 2 reads '
    f'may also change: method (with the same loss and stage 1), '
    f'num_epochs, stage2_epoch (not below {epoch:g}), the stage-2 '
    f'hyperparameters, and the learning-rate schedule after epoch '
    f'{math.ceil(epoch)}; besides {resumable}'
  )


def _describe(saved: dict, config, fields) -> str:
  new = fingerprint(config)
  return ', '.join(f'{k} {saved.get(k)!r} -> {new.get(k)!r}' for k in fields)


def check_checkpoint(config, ckpt, step: int) -> None:
  """Refuses ``config`` if it may not resume the checkpoint at ``step``
  (:class:`ResumeConfigError`). A checkpoint that stores no config (written
  by an older ltjax) is compared with ``workdir/config.json``, field by
  field, as then."""
  meta = ckpt.metadata(step)
  if 'config' in meta:
    saved = meta['config']
    epoch = step / meta['steps_per_epoch']
    source = f'the checkpoint at step {step} (epoch {epoch:g})'
  else:
    saved = read_record(ckpt.workdir)
    if saved is None:
      logging.warning(
        'The checkpoint at step %d in %s records no config, and there is no '
        'config.json: the config is not checked against it.',
        step, ckpt.directory,
      )  # fmt: skip
      return
    saved = {k: v for k, v in flat(saved).items() if k not in RESUMABLE_FIELDS}
    epoch, source = None, os.path.join(ckpt.workdir, 'config.json')
  saved = older_record(saved)
  differ = conflicts(saved, config, epoch)
  if differ:
    raise ResumeConfigError(
      f'workdir {ckpt.workdir} holds a run of another config: {source} was '
      f'trained with {_describe(saved, config, differ)}. '
      f'{may_change(saved, config, epoch).capitalize()}. Resume with its '
      f'config, or use a fresh --workdir.'
    )


def read_record(workdir) -> dict | None:
  """``workdir/config.json``, or None when there is none."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as error:
    raise ResumeConfigError(
      f'{path} is damaged ({error.msg}, line {error.lineno}) and the '
      f'checkpoints beside it record no config of their own (an older '
      f'ltjax wrote them): config.json is all that says which config '
      f'trained them. Restore it (the run logs its config at start), or '
      f'delete it if this config is the one that trained the run: it is '
      f'then written anew.'
    ) from None


def check_workdir(config, workdir) -> None:
  """Before any data is read: refuses ``config`` if the newest checkpoint
  in ``workdir`` may not resume under it, and records ``config`` as
  ``workdir/config.json`` (process 0).

  With no checkpoint any config is accepted: a ``config.json`` of another
  config (a run that stopped before its first checkpoint) is replaced, and
  the log says so. A damaged ``config.json`` is replaced too, with a
  warning, unless the checkpoints need it (an older ltjax wrote them).
  """
  path = os.path.join(workdir, 'config.json')
  try:
    before = read_record(workdir)
  except ResumeConfigError as error:
    before = error
  step = None
  if os.path.isdir(os.path.join(workdir, 'checkpoints')):
    ckpt = Checkpointer(workdir)
    try:
      step = ckpt.latest_step()
      if step is not None:
        try:
          meta = ckpt.metadata(step)
        except Exception:  # noqa: BLE001 (damaged: the restore falls back
          meta = None  # past it and checks the checkpoint it reads)
        if meta is not None:
          if isinstance(before, ResumeConfigError) and 'config' not in meta:
            raise before
          check_checkpoint(config, ckpt, step)
    finally:
      ckpt.close()
  if isinstance(before, ResumeConfigError):
    logging.warning(
      '%s is damaged; it is replaced by this run\'s config (its checkpoints '
      'carry their own).', path,
    )  # fmt: skip
  elif step is None and before is not None and before != as_json(config):
    logging.warning(
      '%s has no checkpoint, so any config may start it: its config.json, '
      'of another config, is replaced by this run\'s.', workdir,
    )  # fmt: skip
  if jax.process_index() == 0:
    write_record(path, as_json(config))


def write_record(path, record: dict) -> None:
  # Whole or not at all: the other processes of a run may read the file
  # while it is written.
  files.write_text(path, json.dumps(record, indent=2, sort_keys=True))
