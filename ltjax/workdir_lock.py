"""One owner per workdir: an exclusive lock held for the whole run.

A job started twice, or a rerun while the first is still alive, would
otherwise train into the same checkpoints (orbax in one run removes the
other's unfinished checkpoint folders). :class:`WorkdirLock` takes an
exclusive ``flock`` on ``WORKDIR/.lock`` and writes its holder (pid, host,
start time) into it; a second run is refused with one line naming that
holder. The kernel releases the lock when its process dies, so a lock left
by a killed run is taken over, and the log says whose it was.

``flock`` is local to one machine on most network filesystems: two runs on
two hosts sharing a workdir over NFS are not caught.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time

from absl import logging

from ltjax.errors import WorkdirBusyError


class WorkdirLock:
  """A context manager holding ``workdir``'s lock (process 0 of a run)."""

  def __init__(self, workdir):
    self.path = os.path.join(os.fspath(workdir), '.lock')
    self._file = None

  def __enter__(self):
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    f = open(self.path, 'a+')  # noqa: SIM115 (held until __exit__)
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = _describe(f.read())
      f.close()
      raise WorkdirBusyError(
        f'{os.path.dirname(self.path)} is in use by another run ({holder}); '
        'wait for it to end or stop it, or use another --workdir.'
      ) from None
    f.seek(0)
    previous = f.read()
    if previous.strip():
      logging.warning(
        'Took over the lock of %s left by a run that is no longer running '
        '(%s).',
        os.path.dirname(self.path), _describe(previous),
      )  # fmt: skip
    f.seek(0)
    f.truncate()
    json.dump(
      {
        'pid': os.getpid(),
        'host': socket.gethostname(),
        'started': time.strftime('%Y-%m-%d %H:%M:%S %Z'),
      },
      f,
    )
    f.flush()
    self._file = f
    return self

  def __exit__(self, *exc):
    if self._file is not None:
      self._file.seek(0)
      self._file.truncate()  # an empty lock file: released cleanly
      self._file.flush()
      fcntl.flock(self._file, fcntl.LOCK_UN)
      self._file.close()
      self._file = None


def _describe(text: str) -> str:
  try:
    h = json.loads(text)
    return f'pid {h["pid"]} on {h["host"]}, started {h["started"]}'
  except (ValueError, KeyError, TypeError):
    return 'holder unknown'
