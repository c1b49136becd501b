"""Trains and evaluates a model: ``python -m ltjax.main --config=... --workdir=...``.

Example (README has more)::

  python -m ltjax.main --config=configs/cifar10_lt.py:method=ours_ce,imb=100 \
    --workdir=runs/cifar10_lt_ours_100
"""

import os
import sys
import traceback

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from ltjax import devices, train
from ltjax.checkpoint import UnreadableCheckpointError
from ltjax.preemption import Preempted

# What a bad config, a missing or malformed file, an unprepared dataset or
# damaged checkpoints raise from ltjax's own checks: printed as one message,
# not a traceback.
EXPECTED_ERRORS = (
  ValueError,
  FileNotFoundError,
  FloatingPointError,
  UnreadableCheckpointError,
)
_PACKAGE = os.path.dirname(os.path.abspath(__file__))

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  'config', None, 'Config file, e.g. configs/cifar10_lt.py:method=ce,imb=100.'
)
flags.DEFINE_string('workdir', None, 'Where checkpoints and results go.')
flags.DEFINE_string(
  'coordinator_address', None, 'Multi-host: address of process 0 (host:port).'
)
flags.DEFINE_integer('num_processes', None, 'Multi-host: number of processes.')
flags.DEFINE_integer('process_id', None, 'Multi-host: this process index.')
flags.DEFINE_bool(
  'multihost',
  False,
  'Multi-host: join the processes jax.distributed finds in the cluster '
  "environment (SLURM's, Open MPI's) instead of the three flags above.",
)
flags.DEFINE_bool(
  'debug', False, 'Show the traceback of expected errors (bad config, data).'
)
flags.mark_flags_as_required(['config', 'workdir'])


def raised_by_ltjax(error: BaseException) -> bool:
  """Whether ``error`` is one of ltjax's own checks: an expected error type
  raised in ltjax's code (an error from inside JAX or a library is not)."""
  if not isinstance(error, EXPECTED_ERRORS):
    return False
  frames = traceback.extract_tb(error.__traceback__)
  return bool(frames) and os.path.abspath(frames[-1].filename).startswith(
    _PACKAGE + os.sep
  )


def main(argv):
  del argv
  if FLAGS.coordinator_address:
    devices.join_processes(
      FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id
    )
  elif FLAGS.multihost:
    devices.join_processes()
  logging.info('JAX devices: %s', jax.devices())
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except Preempted as stop:
    print(f'ltjax: {stop}', file=sys.stderr)
    sys.exit(stop.exit_status)
  except EXPECTED_ERRORS as error:
    if FLAGS.debug or not raised_by_ltjax(error):
      raise
    print(f'ltjax: error: {error}', file=sys.stderr)
    print('(--debug shows the traceback)', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
