"""Per-example classification losses.

Every loss maps ``logits [batch, num_classes]`` and integer ``labels [batch]``
to ``[batch]`` losses, so that callers (and :func:`ltjax.meta_step`) can weight
examples individually. The optional ``class_weights [num_classes]`` multiply
each example's loss by ``class_weights[label]``: that gives the class-balanced
variants (CB-CE, CB-focal, LDAM-DRW).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _weighted(losses: jax.Array, labels: jax.Array, class_weights):
  if class_weights is None:
    return losses
  class_weights = jnp.asarray(class_weights, losses.dtype)
  return losses * class_weights[labels]


def _label_log_prob(logits: jax.Array, labels: jax.Array) -> jax.Array:
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  return jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]


def softmax_cross_entropy(
  logits: jax.Array, labels: jax.Array, class_weights=None
) -> jax.Array:
  """Per-example ``-w_y log softmax(z)_y``.

  Args:
    logits: ``[batch, num_classes]``.
    labels: ``[batch]`` integer class indices.
    class_weights: optional ``[num_classes]`` weights ``w``.

  Returns:
    ``[batch]`` losses.
  """
  return _weighted(-_label_log_prob(logits, labels), labels, class_weights)


def focal_loss(
  logits: jax.Array, labels: jax.Array, gamma: float = 1.0, class_weights=None
) -> jax.Array:
  """Softmax focal loss ``-w_y (1 - p_y)^gamma log p_y`` (Lin et al., 2017).

  ``log(1 - p_y)`` is computed as ``logsumexp_{j != y} z_j - logsumexp_j z_j``,
  so the loss and its gradient stay finite for arbitrarily confident logits
  and for any ``gamma >= 0`` (``gamma = 0`` is cross-entropy).

  Args:
    logits: ``[batch, num_classes]``, ``num_classes >= 2``.
    labels: ``[batch]`` integer class indices.
    gamma: focusing parameter, ``>= 0``.
    class_weights: optional ``[num_classes]`` weights ``w``.

  Returns:
    ``[batch]`` losses.
  """
  if gamma < 0:
    raise ValueError(f'focal_loss needs gamma >= 0, got {gamma}.')
  log_norm = jax.nn.logsumexp(logits, axis=-1)
  is_label = jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
  log_p = jnp.take_along_axis(logits, labels[..., None], -1)[..., 0] - log_norm
  others = jnp.where(is_label, -jnp.inf, logits)
  log_one_minus_p = jax.nn.logsumexp(others, axis=-1) - log_norm
  losses = jnp.exp(gamma * log_one_minus_p) * (-log_p)
  return _weighted(losses, labels, class_weights)


def positive_counts(class_counts, who: str) -> np.ndarray:
  """``class_counts`` as float64, refused unless 1-D and positive (``who``
  names the function in the error)."""
  counts = np.asarray(class_counts, dtype=np.float64)
  if counts.ndim != 1 or np.any(counts <= 0):
    raise ValueError(
      f'{who} needs a 1-D array of positive class counts, got {counts}.'
    )
  return counts


def ldam_margins(class_counts, max_margin: float = 0.5) -> np.ndarray:
  """LDAM margins ``Delta_y ∝ n_y^{-1/4}``, the largest equal to ``max_margin``.

  Args:
    class_counts: ``[num_classes]`` positive training counts.
    max_margin: the margin of the rarest class (0.5 in Cao et al., 2019).

  Returns:
    ``[num_classes]`` float64 margins.
  """
  counts = positive_counts(class_counts, 'ldam_margins')
  margins = counts**-0.25
  return margins * (max_margin / margins.max())


def ldam_loss(
  logits: jax.Array,
  labels: jax.Array,
  margins,
  scale: float = 30.0,
  class_weights=None,
) -> jax.Array:
  """Label-distribution-aware margin loss (Cao et al., NeurIPS 2019).

  ``-w_y log( e^{s(z_y - Delta_y)} / (e^{s(z_y - Delta_y)}
  + sum_{j != y} e^{s z_j}) )``: cross-entropy on ``s (z - Delta_y e_y)``.
  Use it with a cosine head (``ResNet(..., cosine_head=True)``), whose logits
  lie in ``[-1, 1]``.

  Args:
    logits: ``[batch, num_classes]``.
    labels: ``[batch]`` integer class indices.
    margins: ``[num_classes]`` margins, from :func:`ldam_margins`.
    scale: the logit scale ``s`` (30 in the official code).
    class_weights: optional ``[num_classes]`` weights (LDAM-DRW).

  Returns:
    ``[batch]`` losses.
  """
  margins = jnp.asarray(margins, logits.dtype)
  shifted = (
    logits
    - jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    * margins[labels][..., None]
  )
  return softmax_cross_entropy(scale * shifted, labels, class_weights)


def log_class_prior(class_counts) -> np.ndarray:
  """``log π_y = log(n_y / Σ_c n_c)``, float64, from positive class counts."""
  counts = positive_counts(class_counts, 'log_class_prior')
  return np.log(counts / counts.sum())


def logit_adjusted_loss(
  logits: jax.Array,
  labels: jax.Array,
  log_prior,
  tau: float = 1.0,
  class_weights=None,
) -> jax.Array:
  """Logit-adjusted cross-entropy (Menon et al., "Long-Tail Learning via
  Logit Adjustment", ICLR 2021, eq. 10).

  ``-w_y log softmax(z + τ log π)_y``: cross-entropy on the logits shifted by
  ``τ`` times the training label prior. The model's own logits ``z`` then
  estimate the balanced posterior; predict with ``argmax z``.

  Args:
    logits: ``[batch, num_classes]``.
    labels: ``[batch]`` integer class indices.
    log_prior: ``[num_classes]`` ``log π`` (:func:`log_class_prior`).
    tau: the adjustment's temperature (1 in the paper).
    class_weights: optional ``[num_classes]`` weights ``w``.

  Returns:
    ``[batch]`` losses.
  """
  shift = jnp.asarray(log_prior, logits.dtype) * tau
  return softmax_cross_entropy(logits + shift, labels, class_weights)


def balanced_softmax_loss(
  logits: jax.Array, labels: jax.Array, class_counts, class_weights=None
) -> jax.Array:
  """Balanced Softmax (Ren et al., "Balanced Meta-Softmax for Long-Tailed
  Visual Recognition", NeurIPS 2020, eq. 4).

  ``-w_y log( n_y e^{z_y} / Σ_j n_j e^{z_j} )``: cross-entropy on
  ``z + log n``. It equals :func:`logit_adjusted_loss` at ``τ = 1`` (the
  shifts differ by the constant ``log Σ_c n_c``, which softmax cancels), up
  to float rounding.

  Args:
    logits: ``[batch, num_classes]``.
    labels: ``[batch]`` integer class indices.
    class_counts: ``[num_classes]`` positive training counts ``n``.
    class_weights: optional ``[num_classes]`` weights ``w``.

  Returns:
    ``[batch]`` losses.
  """
  counts = positive_counts(class_counts, 'balanced_softmax_loss')
  shift = jnp.asarray(np.log(counts), logits.dtype)
  return softmax_cross_entropy(logits + shift, labels, class_weights)
