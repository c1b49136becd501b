"""Files that appear whole: written beside their path, then renamed into it.

A crash, a kill or a full disk mid-write leaves the previous file (or none),
never half of one, and a concurrent reader (another process of a run, a
cache's other users) sees either version whole.
"""

from __future__ import annotations

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_file(path: str):
  """Yields a temporary path beside ``path``; on success it becomes
  ``path``, with the permissions ``open`` would give it (``mkstemp`` makes
  0600); on an error it is removed."""
  folder = os.path.dirname(path)
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, suffix='.tmp')
  os.close(fd)
  try:
    yield tmp
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` through :func:`atomic_file`."""
  with atomic_file(path) as tmp, open(tmp, 'w') as f:
    f.write(text)
