"""Files that save a large dataset's start from re-reading its records.

Learning a tfds split's labels, or Places365's file names, reads every
record's bytes; :class:`ltjax.data.tfds_sources.TfdsSource` keeps what it
read in a cache folder (:func:`default_cache_dir`), keyed by
:func:`split_fingerprint`, so a changed dataset is read again. Files appear
through a rename (:func:`ltjax.files.atomic_file`): a crash or a concurrent reader never
sees half of one. No TensorFlow here.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from ltjax.files import atomic_file


def default_cache_dir() -> str:
  """``$LTJAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/ltjax``, else
  ``~/.cache/ltjax``."""
  if os.environ.get('LTJAX_CACHE_DIR'):
    return os.environ['LTJAX_CACHE_DIR']
  base = os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache')
  return os.path.join(base, 'ltjax')


def tfds_cache_dir(data_config):
  """``TfdsSource``'s ``cache_dir`` from ``config.data.cache_dir`` (``''``
  when it is ``'off'``, None for the default)."""
  if data_config.cache_dir == 'off':
    return ''
  return data_config.cache_dir or None


def split_fingerprint(builder, tfds_split: str) -> str | None:
  """sha256 of a prepared split's identity: the dataset's name and version
  and each file's name, size and modification time. None when the split has
  no files to fingerprint (``tfds.testing.mock_data``), so nothing is
  cached for it."""
  try:
    paths = builder.info.splits[tfds_split].filepaths
  except (KeyError, ValueError):
    return None
  digest = hashlib.sha256(f'{builder.name} {builder.version}'.encode())
  digest.update(f' {tfds_split}\n'.encode())
  try:
    for path in paths:
      stat = os.stat(os.fspath(path))
      name = os.path.basename(os.fspath(path))
      digest.update(f'{name} {stat.st_size} {stat.st_mtime_ns}\n'.encode())
  except OSError:
    return None
  return digest.hexdigest() if paths else None


def save(path: str, array: np.ndarray) -> None:
  """``np.save`` (no pickle) through :func:`ltjax.files.atomic_file`."""
  with atomic_file(path) as tmp:
    with open(tmp, 'wb') as f:
      np.save(f, array, allow_pickle=False)


def load(path: str | None) -> np.ndarray | None:
  """The array at ``path``; None when there is none or it is damaged."""
  if not path or not os.path.isfile(path):
    return None
  try:
    return np.load(path, allow_pickle=False)
  except (OSError, ValueError):
    return None
