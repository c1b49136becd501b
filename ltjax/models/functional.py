"""Adapters from Flax classifiers to the ``loss_fn`` that meta_step takes."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax


def make_loss_fn(
  model: nn.Module,
  per_example_loss: Callable[[jax.Array, jax.Array], jax.Array],
  image_key: str = 'image',
  label_key: str = 'label',
):
  """``loss_fn(params, batch_stats, batch) -> (losses [batch], batch_stats)``.

  Runs ``model`` in training mode on ``batch[image_key]`` and applies
  ``per_example_loss(logits, batch[label_key])``, e.g.
  ``ltjax.softmax_cross_entropy`` or a ``functools.partial`` of
  ``ltjax.ldam_loss``. Create it once and reuse it: :func:`ltjax.meta_step`
  treats it as a static argument.
  """

  def loss_fn(params, batch_stats, batch):
    logits, updates = model.apply(
      {'params': params, 'batch_stats': batch_stats},
      batch[image_key],
      train=True,
      mutable=['batch_stats'],
    )
    losses = per_example_loss(logits, batch[label_key])
    return losses, updates['batch_stats']

  return loss_fn
