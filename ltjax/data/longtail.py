"""Long-tailed subsampling as pure NumPy: profiles, dev carving, shot groups.

The official protocol (Jamal et al.; Meta-Weight-Net's data code): carve a
balanced development set of ``dev_per_class`` images per class from the full
training set first, then subsample each class ``i`` of the rest to
``n_i = int(n_max (1/IF)^(i / (C - 1)))`` with ``n_max = (N - dev C) / C``.
Everything returns index arrays into the source, so a subset can be saved,
hashed and reproduced exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from ltjax.errors import DataError

# Shot groups of long-tail papers, by training images per class.
MANY_SHOT_MIN = 101  # more than 100
FEW_SHOT_MAX = 19  # fewer than 20


def _check_imbalance(imbalance: float) -> float:
  if not imbalance >= 1:
    raise ValueError(
      f'imbalance factor must be >= 1 (n_max / n_min; 1 is balanced), got '
      f'{imbalance}.'
    )
  return float(imbalance)


def exponential_profile(n_max: float, num_classes: int, imbalance: float):
  """Per-class counts ``int(n_max (1/IF)^(i / (C - 1)))``, ``i = 0..C-1``.

  Args:
    n_max: images of the largest class (a float is allowed, as the official
      ``(N - dev C) / C``).
    num_classes: ``C >= 2``.
    imbalance: ``IF = n_0 / n_{C-1} >= 1``.

  Returns:
    ``[num_classes]`` int64 counts, non-increasing.
  """
  imbalance = _check_imbalance(imbalance)
  if num_classes < 2:
    raise ValueError(f'a profile needs num_classes >= 2, got {num_classes}.')
  i = np.arange(num_classes, dtype=np.float64)
  return np.array(
    [int(n_max * (1.0 / imbalance) ** (k / (num_classes - 1))) for k in i],
    np.int64,
  )


def step_profile(
  n_max: float, num_classes: int, imbalance: float, minority_fraction=0.5
):
  """Step imbalance (Buda et al.): the last ``minority_fraction`` of classes
  get ``int(n_max / IF)`` images, the others ``int(n_max)``."""
  imbalance = _check_imbalance(imbalance)
  if not 0 < minority_fraction < 1:
    raise ValueError(
      f'minority_fraction must lie in (0, 1), got {minority_fraction}.'
    )
  counts = np.full(num_classes, int(n_max), np.int64)
  num_minority = int(round(num_classes * minority_fraction))
  counts[num_classes - num_minority :] = int(n_max / imbalance)
  return counts


PROFILES = {'exp': exponential_profile, 'step': step_profile}


def shot_groups(class_counts) -> dict[str, np.ndarray]:
  """Class indices of the many (>100), medium (20-100) and few (<20) shots."""
  counts = np.asarray(class_counts)
  return {
    'many': np.flatnonzero(counts >= MANY_SHOT_MIN),
    'medium': np.flatnonzero(
      (counts > FEW_SHOT_MAX) & (counts < MANY_SHOT_MIN)
    ),
    'few': np.flatnonzero(counts <= FEW_SHOT_MAX),
  }


@dataclasses.dataclass(frozen=True)
class LongTailSplit:
  """A long-tailed training subset and a balanced dev set, as indices.

  Attributes:
    train: int64 indices into the source's labels, grouped by class.
    dev: int64 indices of the dev set, ``dev_per_class`` per class.
    class_counts: ``[num_classes]`` training images per class.
    n_max: the ``n_max`` of the profile.
  """

  train: np.ndarray
  dev: np.ndarray
  class_counts: np.ndarray
  n_max: float

  @property
  def groups(self) -> dict[str, np.ndarray]:
    return shot_groups(self.class_counts)

  def digest(self) -> str:
    """sha256 of the train and dev indices: identical subsets, same digest."""
    h = hashlib.sha256()
    for a in (self.train, self.dev):
      h.update(np.ascontiguousarray(a, np.int64).tobytes())
      h.update(b'|')
    return h.hexdigest()

  def summary(self) -> str:
    groups = self.groups
    return (
      f'{len(self.train)} training images in {len(self.class_counts)} '
      f'classes (max {self.class_counts.max()}, min {self.class_counts.min()}'
      f'), {len(self.dev)} dev; many/medium/few-shot classes: '
      f'{len(groups["many"])}/{len(groups["medium"])}/{len(groups["few"])}'
    )


def _largest_fitting_n_max(profile_fn, available, num_classes, imbalance):
  ratios = profile_fn(1e12, num_classes, imbalance) / 1e12
  n = int(min(a / r for a, r in zip(available, ratios, strict=True)))
  while np.all(profile_fn(n + 1, num_classes, imbalance) <= available):
    n += 1
  while n > 0 and np.any(profile_fn(n, num_classes, imbalance) > available):
    n -= 1
  return n


def largest_imbalance(n_max: float, num_classes: int, profile: str) -> int:
  """The largest integer imbalance factor whose ``profile`` keeps at least
  one example in every class at ``n_max`` (0: none does, ``n_max < 1``)."""
  profile_fn = PROFILES[profile]
  imbalance = int(np.floor(n_max))  # the smallest class: int(n_max / IF)
  while imbalance >= 1 and profile_fn(n_max, num_classes, imbalance).min() < 1:
    imbalance -= 1
  return imbalance


def empty_class_message(counts, where: str) -> str | None:
  """What to say of class counts with an empty class (None: there is
  none): no subset, dev or test set can hold what is not there, so the fix
  is in the data or ``num_classes``, not in the sizes asked for."""
  counts = np.asarray(counts)
  empty = np.flatnonzero(counts == 0)
  if not empty.size:
    return None
  present = np.flatnonzero(counts)
  return (
    f'class {empty[0]} has no examples in {where} ({empty.size} of '
    f'{counts.size} classes are empty; the labels present run '
    f'{present.min() if present.size else "-"}..'
    f'{present.max() if present.size else "-"}). Set num_classes to the '
    f"data's number of classes, or use data with examples of every class."
  )


def check_no_empty_class(counts, where: str) -> None:
  """Refuses class counts with an empty class (:func:`empty_class_message`)."""
  message = empty_class_message(counts, where)
  if message:
    raise DataError(message)


def long_tail_split(
  labels,
  num_classes: int,
  imbalance: float,
  dev_per_class: int = 10,
  profile: str = 'exp',
  n_max: float | None = None,
  seed: int = 0,
) -> LongTailSplit:
  """Carves a balanced dev set, then subsamples the rest to a profile.

  Each class's images are shuffled with ``seed``; the first
  ``dev_per_class`` form its dev share and the next ``n_i`` its training
  share, so dev and train never overlap and the same seed gives the same
  subset.

  Args:
    labels: ``[N]`` integer labels of the full training set, ``0..C-1``.
    num_classes: ``C``.
    imbalance: imbalance factor ``IF >= 1``.
    dev_per_class: dev images per class (10 for CIFAR; 0 for none).
    profile: ``'exp'`` (the paper) or ``'step'``.
    n_max: images of the largest class; default ``(N - dev C) / C`` as the
      official code.
    seed: seed of the per-class shuffles.

  Returns:
    A :class:`LongTailSplit`.

  Raises:
    ValueError: for ``IF < 1``, an unknown profile, labels that are not 1-D
      integers, or ``dev_per_class < 0``.
    ltjax.errors.DataError: labels out of range, an empty class, a class with
      fewer images than ``dev_per_class``, or a class with fewer images than
      the profile asks for (the message names the class and the largest
      ``n_max`` that fits).
  """
  imbalance = _check_imbalance(imbalance)
  if profile not in PROFILES:
    raise ValueError(
      f'unknown profile {profile!r}; choose one of {sorted(PROFILES)}.'
    )
  labels = np.asarray(labels)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(
      f'labels must be 1-D integers, got {labels.dtype} {labels.shape}.'
    )
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise DataError(
      f'labels must lie in [0, {num_classes}), found {labels.min()}..'
      f'{labels.max()}.'
    )
  if dev_per_class < 0:
    raise ValueError(f'dev_per_class must be >= 0, got {dev_per_class}.')
  per_class = np.bincount(labels, minlength=num_classes)
  check_no_empty_class(per_class, 'the training labels')
  short = np.flatnonzero(per_class < dev_per_class)
  if short.size:
    c = short[0]
    raise DataError(
      f'dev_per_class={dev_per_class} but class {c} has only '
      f'{per_class[c]} images; lower dev_per_class to at most '
      f'{per_class.min()}.'
    )
  if n_max is None:
    n_max = (labels.size - dev_per_class * num_classes) / num_classes
  profile_fn = PROFILES[profile]
  counts = profile_fn(n_max, num_classes, imbalance)
  available = per_class - dev_per_class
  short = np.flatnonzero(counts > available)
  if short.size:
    c = short[0]
    fit = _largest_fitting_n_max(profile_fn, available, num_classes, imbalance)
    raise DataError(
      f'class {c} has {available[c]} images after the dev set but the '
      f'{profile} profile with n_max={n_max:g}, imbalance={imbalance:g} asks '
      f'for {counts[c]}; the largest n_max that fits is {fit}.'
    )

  rng = np.random.default_rng(seed)
  order = np.argsort(labels, kind='stable')
  starts = np.concatenate([[0], np.cumsum(per_class)])
  train, dev = [], []
  for c in range(num_classes):
    idx = rng.permutation(order[starts[c] : starts[c + 1]])
    dev.append(idx[:dev_per_class])
    train.append(idx[dev_per_class : dev_per_class + counts[c]])
  return LongTailSplit(
    train=np.concatenate(train).astype(np.int64),
    dev=np.concatenate(dev).astype(np.int64),
    class_counts=counts,
    n_max=float(n_max),
  )
