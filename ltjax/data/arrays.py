"""In-memory image datasets and the ``.npz`` array source.

An :class:`ArrayData` holds ``uint8`` images ``[N, H, W, 3]`` and ``int32``
labels ``[N]`` in host memory. :func:`load_npz` reads one split from a ``.npz``
file with keys ``image`` and ``label`` (never unpickling);
:func:`from_arrays` wraps users' own arrays. Both check shapes and dtypes up
front so that a bad file fails before any training starts.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile

import numpy as np

from ltjax.data.longtail import empty_class_message
from ltjax.errors import DataError, MissingFileError


@dataclasses.dataclass(frozen=True)
class ArrayData:
  """Images and labels of one split, in host memory.

  Attributes:
    image: ``[N, H, W, C]`` uint8, channels last.
    label: ``[N]`` int32 class indices.
  """

  image: np.ndarray
  label: np.ndarray

  def __len__(self) -> int:
    return len(self.label)

  def subset(self, indices) -> ArrayData:
    """The examples at ``indices`` (a copy), in that order."""
    indices = np.asarray(indices)
    return ArrayData(self.image[indices], self.label[indices])


def from_arrays(image, label, *, num_classes=None, name='arrays') -> ArrayData:
  """Checks and wraps in-memory images ``[N, H, W, C]`` and labels ``[N]``.

  Images must be uint8 (0..255, as decoded files) with 1 or 3 channels;
  labels integers in ``[0, num_classes)`` when ``num_classes`` is given.

  Raises:
    DataError: naming ``name`` and what is wrong with it.
  """
  image = np.asarray(image)
  label = np.asarray(label)
  if image.ndim != 4 or image.shape[-1] not in (1, 3):
    raise DataError(
      f'{name}: image must be [N, H, W, C] with C = 1 or 3 (channels last), '
      f'got shape {image.shape}.'
    )
  if image.dtype != np.uint8:
    raise DataError(
      f'{name}: image must be uint8 in 0..255, got {image.dtype}; convert '
      f'with np.clip(x, 0, 255).astype(np.uint8) if it is 0..255 already.'
    )
  if label.ndim != 1 or not np.issubdtype(label.dtype, np.integer):
    raise DataError(
      f'{name}: label must be 1-D integers, got {label.dtype} {label.shape}.'
    )
  if len(label) != len(image):
    raise DataError(
      f'{name}: {len(image)} images but {len(label)} labels; they must match.'
    )
  if len(label) == 0:
    raise DataError(f'{name}: no examples.')
  if label.min() < 0 or (
    num_classes is not None and label.max() >= num_classes
  ):
    raise DataError(
      f'{name}: labels must lie in [0, {num_classes}), found '
      f'{label.min()}..{label.max()}.'
    )
  return ArrayData(image, label.astype(np.int32))


def load_npz(path, *, num_classes=None) -> ArrayData:
  """Reads one split from ``path``, a ``.npz`` with ``image`` and ``label``.

  The file is opened with ``allow_pickle=False``: object arrays are refused.

  Raises:
    MissingFileError: the file does not exist.
    DataError: the file is not a readable ``.npz``, lacks a key, or holds
      malformed arrays.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise MissingFileError(
      f'no such file: {path}. Write one with '
      f'np.savez(path, image=uint8 [N, H, W, 3], label=int [N]), or point the '
      f'config/flag at the folder that holds it.'
    )
  if not zipfile.is_zipfile(path):
    raise DataError(
      f'{path} is not a readable .npz file (not a zip archive); write it with '
      f'np.savez(path, image=..., label=...).'
    )
  try:
    with np.load(path, allow_pickle=False) as f:
      missing = {'image', 'label'} - set(f.files)
      if missing:
        raise DataError(
          f'{path} lacks key(s) {sorted(missing)}; it has {sorted(f.files)}. '
          f'Save it as np.savez(path, image=..., label=...).'
        )
      image, label = f['image'], f['label']
  except (zipfile.BadZipFile, OSError, EOFError) as e:
    raise DataError(f'{path} is not a readable .npz file: {e}') from e
  except ValueError as e:
    if 'pickle' in str(e):
      raise DataError(
        f'{path} holds object (pickled) arrays, which are not read; save '
        f'plain numeric arrays.'
      ) from e
    raise
  return from_arrays(image, label, num_classes=num_classes, name=path)


def balanced_holdout(labels, num_classes: int, per_class: int, seed: int = 0):
  """Splits indices into a balanced holdout and the rest.

  Takes ``per_class`` random examples of every class (for a test or dev set
  carved from a training pool) and returns ``(holdout, rest)``, two sorted
  int64 index arrays that partition ``range(len(labels))``.

  Raises:
    DataError: a class has fewer than ``per_class`` examples.
  """
  labels = np.asarray(labels)
  counts = np.bincount(labels, minlength=num_classes)
  if per_class < 0 or counts.min() < per_class:
    c = int(np.argmin(counts))
    if counts[c] == 0:
      raise DataError(
        f'a holdout of {per_class} per class is impossible: '
        + empty_class_message(counts, 'the labels')
      )
    raise DataError(
      f'a holdout of {per_class} per class is impossible: class {c} has '
      f'{counts[c]} examples; use at most {counts.min()}.'
    )
  rng = np.random.default_rng(seed)
  holdout = np.concatenate(
    [
      rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
      for c in range(num_classes)
    ]
  )
  mask = np.zeros(len(labels), bool)
  mask[holdout] = True
  return np.flatnonzero(mask), np.flatnonzero(~mask)
