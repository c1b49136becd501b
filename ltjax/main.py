r"""Trains and evaluates a model: ``python -m ltjax.main --config=... --workdir=...``.

A first run of about a minute, offline, on the CIFAR-10 images in
../shared/data (README has more)::

  python -m ltjax.main --workdir=runs/first \
    --config=configs/cifar10_lt.py:source=npz,epochs=6,meta_epochs=2 \
    --config.model=tiny --config.eval_every_epochs=2 \
    --config.data.dir=../shared/data

``--config=FILE:method=NAME`` picks a method (the list below);
``--print_config`` prints every field of the config with its value, and
``--config.FIELD=VALUE`` changes one.
"""

import faulthandler
import glob
import logging as python_logging
import os
import re
import signal
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from ltjax import devices, errors, methods, train
from ltjax.preemption import Preempted

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
flags.DEFINE_bool(
  'print_config', False, 'Print the config (every field) and exit.'
)
flags.DEFINE_bool(
  'library_logs',
  False,
  'Keep the INFO lines of JAX, orbax and other libraries (by default only '
  "ltjax's own INFO lines and every warning are logged).",
)
flags.mark_flag_as_required('config')
HELP_FLAGS = ('--help', '-h', '--helpshort', '-?', '--helpfull')


def _innermost(error: BaseException) -> str:
  """The message at the bottom of a config-loading error, on one line
  (config_flags wraps the file's own error, and a KeyError's message in
  an AttributeError, with a traceback in the text)."""
  while error.args and isinstance(error.args[0], BaseException):
    error = error.args[0]
  text = str(error.args[0]) if error.args else str(error)
  lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
  lines = [ln for ln in lines if not ln.startswith('Pass --help')]
  last = lines[-1] if lines else type(error).__name__
  if len(lines) > 1 and last.startswith('Did you mean'):
    last = f'config field {lines[-2]} does not exist. {last}'
  return re.sub(r'^[\w.]+(Error|Exception): ', '', last)


def _user_error(message: str) -> None:
  print(f'ltjax: error: {message}', file=sys.stderr)
  print('(--debug shows the traceback)', file=sys.stderr)
  sys.exit(2)


def _check_config_path(argv) -> None:
  """A ``--config`` file that does not exist, named with the ones there
  are (config_flags would only report 'config_config' later)."""
  for arg in argv[1:]:
    if arg.startswith('--config='):
      path = arg.split('=', 1)[1].split(':', 1)[0]
      if not os.path.isfile(path):
        folder = os.path.dirname(path) or '.'
        shipped = sorted(glob.glob(os.path.join(folder, '*.py')))
        _user_error(
          f'no config file {path}'
          + (f'; {folder} has {", ".join(shipped)}.' if shipped else '.')
        )


def parse_flags(argv):
  """absl's flag parsing, with a bad ``--config`` (a missing file, an
  unknown method or variant, a misspelled field) as one line, exit 2."""
  if any(a in HELP_FLAGS for a in argv[1:]):
    methods_list = ', '.join(methods.METHODS)
    sys.modules['__main__'].__doc__ = f'{__doc__}\nMethods: {methods_list}.\n'
    app.usage(
      shorthelp='--helpfull' not in argv, writeto_stdout=True, exitcode=0
    )
  debug = '--debug' in argv
  if not debug:
    _check_config_path(argv)
  try:
    return FLAGS(argv)
  except (
    flags.Error,
    errors.Error,
    AttributeError,
    KeyError,
    ValueError,
    OSError,
  ) as error:
    if debug:
      raise
    _user_error(_innermost(error))


def load_config():
  """``FLAGS.config``: a config file that does not load, or an override of
  a field that does not exist, is a user error."""
  try:
    return FLAGS.config
  except Exception as error:  # noqa: BLE001 (config_flags raises many kinds)
    if FLAGS.debug:
      raise
    _user_error(_innermost(error))


def _own_info_only(record) -> bool:
  """A log filter: warnings and errors of anyone, INFO lines of ltjax."""
  return record.levelno >= python_logging.WARNING or os.path.abspath(
    record.pathname
  ).startswith(_PACKAGE + os.sep)


def run(config, workdir, *, debug: bool = False) -> None:
  """:func:`ltjax.train.train_and_evaluate`, as the command line reports it.

  An :class:`ltjax.Error` (a problem with the user's config, data or
  workdir, whose message says the fix) exits with status 2 and its message
  on one line; with ``debug`` it propagates with its traceback, as any other
  error always does (a bug, or an error inside JAX or a library). A
  preemption exits with :attr:`ltjax.preemption.Preempted.exit_status`.
  """
  try:
    train.train_and_evaluate(config, workdir)
  except Preempted as stop:
    print(f'ltjax: {stop}', file=sys.stderr)
    sys.exit(stop.exit_status)
  except errors.Error as error:
    if debug:
      raise
    _user_error(str(error))


def main(argv):
  del argv
  # `kill -USR1 PID`: every thread's Python stack to stderr; the run goes on.
  faulthandler.register(signal.SIGUSR1, all_threads=True)
  if not FLAGS.library_logs:
    logging.get_absl_handler().python_handler.addFilter(_own_info_only)
  config = load_config()
  if FLAGS.print_config:
    print(config)
    return
  if not FLAGS.workdir:
    _user_error(
      '--workdir is required: the folder for checkpoints and results.'
    )
  if FLAGS.coordinator_address:
    devices.join_processes(
      FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id
    )
  elif FLAGS.multihost:
    devices.join_processes()
  logging.info('JAX devices: %s', jax.devices())
  run(config, FLAGS.workdir, debug=FLAGS.debug)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
