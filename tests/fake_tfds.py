"""``tfds.testing.mock_data`` for whole training runs.

While ``as_dataset`` runs, mock_data swaps the file system of the whole
process (``tfds.testing.MockFs``) for a temporary one, only so that the
dataset's folder seems to exist. Orbax writes checkpoints on a background
thread, so a pipeline built while a checkpoint is being written (the start
of stage 2 is both) sends orbax's file operations into that temporary file
system, and the save fails at random. Here the folder is made for real, in
``data_dir`` (a test's temporary folder), and nothing is swapped.
"""

from __future__ import annotations

import contextlib
import os


class _RealFs:
  """MockFs's one use under mock_data, on the real file system."""

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False

  def add_file(self, path, content=None):
    os.makedirs(os.path.dirname(os.fspath(path)), exist_ok=True)


@contextlib.contextmanager
def mock_data(as_dataset_fn):
  """``tfds.testing.mock_data(as_dataset_fn=...)``, every dataset declared
  prepared, without the file-system swap (the config's
  ``data.tfds_data_dir`` must be a temporary folder)."""
  import tensorflow_datasets as tfds  # noqa: PLC0415
  from tensorflow_datasets.testing import test_utils  # noqa: PLC0415

  saved = test_utils.MockFs, tfds.core.DatasetBuilder.is_prepared
  test_utils.MockFs = _RealFs
  tfds.core.DatasetBuilder.is_prepared = lambda _: True
  try:
    with tfds.testing.mock_data(as_dataset_fn=as_dataset_fn):
      yield
  finally:
    test_utils.MockFs, tfds.core.DatasetBuilder.is_prepared = saved
