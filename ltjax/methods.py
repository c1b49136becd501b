"""The methods of the paper's tables: a loss and what each stage does.

A method is a per-example loss plus what each training stage does: stage 1
(epochs before ``stage2_epoch``, "t1") and stage 2 (the rest, "t2") each run
one of

- ``'plain'``: unweighted mean loss;
- ``'cb'``: class-balanced weights ``w_y`` (Cui et al.);
- ``'ours'``: class weights plus meta-learned conditional weights
  (:func:`ltjax.meta_step`, Jamal et al.);
- ``'l2rw'``: Learning to Reweight (:func:`ltjax.meta_baselines.l2rw_step`);
- ``'mwn'``: Meta-Weight-Net (:func:`ltjax.meta_baselines.mwn_step`).

Each stage's update is :func:`ltjax.train_step.make_update_fn`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp

from ltjax import losses as losses_lib

STAGES = ('plain', 'cb', 'ours', 'l2rw', 'mwn')
META_STAGES = ('ours', 'l2rw', 'mwn')


@dataclasses.dataclass(frozen=True)
class Method:
  loss: str  # 'ce', 'focal' or 'ldam'
  stage1: str
  stage2: str

  @property
  def uses_meta(self) -> bool:
    return self.stage1 in META_STAGES or self.stage2 in META_STAGES


METHODS = {
  'ce': Method('ce', 'plain', 'plain'),
  'cb_ce': Method('ce', 'cb', 'cb'),
  'focal': Method('focal', 'plain', 'plain'),
  'cb_focal': Method('focal', 'cb', 'cb'),
  'ldam': Method('ldam', 'plain', 'plain'),
  'ldam_drw': Method('ldam', 'plain', 'cb'),
  'cb_finetune': Method('ce', 'plain', 'cb'),
  'l2rw': Method('ce', 'l2rw', 'l2rw'),
  'mwn': Method('ce', 'mwn', 'mwn'),
  'ours_ce': Method('ce', 'plain', 'ours'),
  'ours_focal': Method('focal', 'plain', 'ours'),
  'ours_ldam': Method('ldam', 'plain', 'ours'),
}


def get_method(name: str) -> Method:
  if name not in METHODS:
    raise ValueError(
      f'unknown method {name!r} (config.method); choose one of '
      f'{sorted(METHODS)}.'
    )
  return METHODS[name]


def per_example_loss(method: Method, config, class_counts):
  """The per-example loss ``(logits, labels) -> [batch]`` of ``method``.

  Logits are cast to float32 first, so losses (and the meta step's ε) stay
  float32 when the model computes in bfloat16.
  """
  if method.loss == 'ce':
    loss = losses_lib.softmax_cross_entropy
  elif method.loss == 'focal':
    loss = functools.partial(losses_lib.focal_loss, gamma=config.focal_gamma)
  else:
    margins = losses_lib.ldam_margins(class_counts, config.ldam_max_margin)
    loss = functools.partial(
      losses_lib.ldam_loss, margins=margins, scale=config.ldam_scale
    )

  def f32_loss(logits, labels):
    return loss(logits.astype(jnp.float32), labels)

  return f32_loss
