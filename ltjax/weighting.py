"""Class-balanced weights from effective numbers (Cui et al., CVPR 2019)."""

from __future__ import annotations

import numpy as np


def _check_counts(class_counts) -> np.ndarray:
  counts = np.asarray(class_counts)
  if counts.ndim != 1 or counts.size == 0:
    raise ValueError(
      f'class_counts must be a non-empty 1-D array of per-class training '
      f'counts, got shape {counts.shape}.'
    )
  if not np.issubdtype(counts.dtype, np.number) or np.any(
    counts != np.round(counts)
  ):
    raise ValueError(f'class_counts must be integers, got {counts!r}.')
  bad = np.flatnonzero(counts <= 0)
  if bad.size:
    raise ValueError(
      f'class_counts must be positive: classes {bad.tolist()} have counts '
      f'{counts[bad].tolist()}. Every class needs at least one training '
      'example; drop empty classes before weighting.'
    )
  return counts.astype(np.float64)


def _check_beta(beta: float) -> float:
  if not 0.0 <= beta < 1.0:
    raise ValueError(
      f'beta must lie in [0, 1), got {beta}. The official code uses 0.9999; '
      'beta -> 1 approaches inverse class frequency, beta = 0 gives uniform '
      'weights.'
    )
  return float(beta)


def effective_number(class_counts, beta: float = 0.9999) -> np.ndarray:
  """Effective number of samples per class, ``(1 - beta^n) / (1 - beta)``.

  Args:
    class_counts: ``[num_classes]`` positive integer counts ``n_y``.
    beta: in ``[0, 1)``.

  Returns:
    ``[num_classes]`` float64 effective numbers ``E_y``.
  """
  counts = _check_counts(class_counts)
  beta = _check_beta(beta)
  if beta == 0.0:
    return np.ones_like(counts)
  # 1 - beta^n computed as -expm1(n log beta): exact for beta close to 1.
  return -np.expm1(counts * np.log(beta)) / (1.0 - beta)


def class_balanced_weights(class_counts, beta: float = 0.9999) -> np.ndarray:
  """Class-balanced weights ``w_y = (1 - beta) / (1 - beta^{n_y})``.

  The weights are the inverse effective numbers, rescaled so that
  ``sum_y w_y = C`` (``C`` = number of classes), as in Cui et al. (CVPR 2019)
  and the official code of Jamal et al. (CVPR 2020).

  Args:
    class_counts: ``[num_classes]`` positive integer training counts ``n_y``.
    beta: in ``[0, 1)``; 0.9999 in the official code.

  Returns:
    ``[num_classes]`` float64 weights summing to ``num_classes``.

  Raises:
    ValueError: if a count is not a positive integer or ``beta`` is outside
      ``[0, 1)``.

  Example:
    >>> import ltjax
    >>> ltjax.class_balanced_weights([100, 10], beta=0.9).round(4).tolist()
    [0.7889, 1.2111]
  """
  inverse = 1.0 / effective_number(class_counts, beta)
  return inverse * (inverse.size / inverse.sum())
