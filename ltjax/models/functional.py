"""Adapters from Flax classifiers to the ``loss_fn`` that meta_step takes."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax


def scaled_logits(params, logits: jax.Array) -> jax.Array:
  """``logits``, times ``params['class_scale']`` [C] where there is one.

  A classifier's learnable per-class logit scale (LWS, Kang et al., ICLR
  2020) lives beside the model's own parameters; Flax's ``apply`` ignores
  it, so the trainer's loss and evaluation apply it here.
  """
  if 'class_scale' in params:
    return logits * params['class_scale'].astype(logits.dtype)
  return logits


def make_loss_fn(
  model: nn.Module,
  per_example_loss: Callable[[jax.Array, jax.Array], jax.Array],
  image_key: str = 'image',
  label_key: str = 'label',
  train: bool = True,
):
  """``loss_fn(params, batch_stats, batch) -> (losses [batch], batch_stats)``.

  Runs ``model`` on ``batch[image_key]`` and applies
  ``per_example_loss(logits, batch[label_key])``, e.g.
  ``ltjax.softmax_cross_entropy`` or a ``functools.partial`` of
  ``ltjax.ldam_loss``. Create it once and reuse it: :func:`ltjax.meta_step`
  treats it as a static argument.

  ``train=True``: training mode, the BatchNorm statistics updated.
  ``train=False``: evaluation mode, the statistics returned unchanged (a
  frozen backbone, as when only the classifier is retrained).
  """

  def loss_fn(params, batch_stats, batch):
    variables = {'params': params, 'batch_stats': batch_stats}
    if train:
      logits, updates = model.apply(
        variables, batch[image_key], train=True, mutable=['batch_stats']
      )
      batch_stats = updates['batch_stats']
    else:
      logits = model.apply(variables, batch[image_key], train=False)
    losses = per_example_loss(scaled_logits(params, logits), batch[label_key])
    return losses, batch_stats

  return loss_fn
