"""ltjax's own errors: a problem with the user's input, not with the code.

Every error here is a problem the user can fix (a config value, a data file,
a workdir), and its message names the problem and the fix; the command line
(:mod:`ltjax.main`) prints it as one line, without a traceback. Anything
else, including a ``ValueError`` that a pure function raises on arguments of
the wrong shape (an API misuse), keeps its traceback.

Each subclass also derives from the builtin error it has always been, so
``except ValueError`` (or ``FileNotFoundError``, ...) still catches it::

  >>> issubclass(ConfigError, Error) and issubclass(ConfigError, ValueError)
  True
"""

from __future__ import annotations


class Error(Exception):
  """A problem with the user's input; the message names it and the fix."""


class ConfigError(Error, ValueError):
  """A config value (or a combination) that no run can use."""


class DataError(Error, ValueError):
  """Data that cannot be used: a malformed file, labels out of range, a
  class too small for the split the config asks for."""


class MissingFileError(Error, FileNotFoundError):
  """A file, folder or prepared dataset the run needs is not there."""


class NonFiniteError(Error, FloatingPointError):
  """A training step went non-finite; the message names the rates to lower."""


class UnreadableCheckpointError(Error, RuntimeError):
  """No checkpoint of a workdir could be restored."""


class WorkdirBusyError(Error, RuntimeError):
  """Another live process holds the workdir."""


class ResumeConfigError(Error, ValueError):
  """A workdir's checkpoint was trained under a config this run may not
  change; the message names the fields and what may change."""


class DamagedRecordError(Error, ValueError):
  """A record file with a damaged line before its last."""
