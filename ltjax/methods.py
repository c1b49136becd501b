"""The methods of the paper's tables and of later long-tail papers, as data.

Three tables, and nothing outside them branches on a loss's or a stage's
name:

- :data:`LOSSES`: each per-example loss with its hyperparameters (default,
  type, rule), whether it needs a cosine head, the logit scale that
  calibration reads, and the warm-up it implies.
- :data:`STAGES`: what a training stage does: its gradient function
  (:mod:`ltjax.stages`), the class weights it uses, whether it reads the dev
  batch, which parameters it trains, its sampler, whether it re-initializes
  the classifier, its learning rate, and its hyperparameters.
- :data:`METHODS`: a method is a row: a loss, stage 1 (epochs before
  ``stage2_epoch``, "t1"), stage 2 (the rest, "t2") and an optional
  post-hoc adjustment of the logits (:data:`POSTHOC`), its ``τ`` chosen on
  the dev set at every evaluation.

A method that reuses existing pieces is one row of :data:`METHODS`; a new
loss is its function in :mod:`ltjax.losses` plus one row of :data:`LOSSES`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np

from ltjax import losses as losses_lib
from ltjax import stages as stages_lib
from ltjax import weighting
from ltjax.errors import ConfigError
from ltjax.fields import INT, NUM, STR, Field, at_least, choice, in_range

# --- Losses --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Loss:
  """A per-example loss.

  Attributes:
    make: ``make(config, class_counts) -> loss(logits, labels) -> [batch]``.
    hyperparameters: its config fields.
    cosine_head: the model's head is a cosine classifier (logits in [-1, 1]).
    logit_scale: the config field that scales the logits before the softmax
      the loss trains (read by the calibration error), or None.
    warmup_epochs: the linear lr warm-up it implies (``warmup_epochs``).
    paper: where it comes from.
  """

  make: Callable
  hyperparameters: dict = dataclasses.field(default_factory=dict)
  cosine_head: bool = False
  logit_scale: str | None = None
  warmup_epochs: int = 0
  paper: str = ''


def _ldam(config, class_counts):
  margins = losses_lib.ldam_margins(class_counts, config.ldam_max_margin)
  return functools.partial(
    losses_lib.ldam_loss, margins=margins, scale=config.ldam_scale
  )


LOSSES = {
  'ce': Loss(
    lambda config, counts: losses_lib.softmax_cross_entropy,
    paper='softmax cross-entropy',
  ),
  'focal': Loss(
    lambda config, counts: functools.partial(
      losses_lib.focal_loss, gamma=config.focal_gamma
    ),
    {'focal_gamma': Field(1.0, NUM, at_least(0), 'the official code')},
    paper='Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017',
  ),
  'ldam': Loss(
    _ldam,
    {
      'ldam_max_margin': Field(
        0.5, NUM, at_least(0, strict=True), 'Cao et al.'
      ),
      'ldam_scale': Field(30.0, NUM, at_least(0, strict=True), 'Cao et al.'),
    },
    cosine_head=True,
    logit_scale='ldam_scale',
    warmup_epochs=5,  # LDAM-DRW's linear warm-up
    paper='Cao et al., "Learning Imbalanced Datasets with Label-Distribution-'
    'Aware Margin Loss", NeurIPS 2019',
  ),
  'la': Loss(
    lambda config, counts: functools.partial(
      losses_lib.logit_adjusted_loss,
      log_prior=losses_lib.log_class_prior(counts),
      tau=config.la_tau,
    ),
    {'la_tau': Field(1.0, NUM, at_least(0), 'Menon et al.')},
    paper='Menon et al., "Long-Tail Learning via Logit Adjustment", ICLR 2021',
  ),
  'bs': Loss(
    lambda config, counts: functools.partial(
      losses_lib.balanced_softmax_loss, class_counts=counts
    ),
    paper='Ren et al., "Balanced Meta-Softmax for Long-Tailed Visual '
    'Recognition", NeurIPS 2020',
  ),
}

# --- Stages --------------------------------------------------------------------

SAMPLERS = ('instance', 'class', 'sqrt')
TRAINS = ('all', 'classifier', 'class_scale')

_CB_BETA = Field(0.9999, NUM, in_range(0, 1), 'Cui et al.; the official code')
_EPS_GRAD = Field('jvp', STR, choice(('jvp', 'unroll')))
_CLASSIFIER_LR = Field(
  0.04,
  NUM,
  at_least(0, strict=True),
  # Kang et al. retrain the classifier at lr 0.2 for batch 512 (cosine to
  # 0); scaled linearly to the CIFAR batch of 100.
  'Kang et al. (0.2 at batch 512), scaled to batch 100',
)


@dataclasses.dataclass(frozen=True)
class Stage:
  """A training stage.

  Attributes:
    grads: ``grads(loss_fn, class_w, config) -> grad_fn`` (:mod:`ltjax.stages`).
    class_weights: ``'ones'`` or ``'cb'`` (``class_balanced_weights`` of
      ``config.cb_beta``), the ``[C]`` weights ``grads`` receives.
    uses_dev: reads the balanced dev batch (the meta-learning stages).
    trains: ``'all'`` parameters (BatchNorm in training mode), only the
      ``'classifier'``, or only LWS's ``'class_scale'`` (both with the
      backbone frozen, BatchNorm in evaluation mode).
    sampler: the training batches' sampler, one of :data:`SAMPLERS`:
      ``'instance'`` (every example once per epoch), ``'class'`` (each class
      equally likely) or ``'sqrt'`` (a class in proportion to ``√n_c``).
    reinit_classifier: the classifier starts afresh when the stage starts.
    lr: ``'schedule'`` (the config's step schedule) or ``'classifier'``
      (``config.classifier_lr``, cosine to 0 over the stage).
    init_extra: ``init_extra(config, key) -> dict`` of ``TrainState``
      fields the stage carries (Meta-Weight-Net's ``φ``), or None.
    hyperparameters: its config fields.
    paper: where it comes from.
  """

  grads: Callable
  class_weights: str = 'ones'
  uses_dev: bool = False
  trains: str = 'all'
  sampler: str = 'instance'
  reinit_classifier: bool = False
  lr: str = 'schedule'
  init_extra: Callable | None = None
  hyperparameters: dict = dataclasses.field(default_factory=dict)
  paper: str = ''

  @property
  def enters(self) -> bool:
    """Starts with :func:`ltjax.stages.enter_stage` (a part of the model
    added, re-initialized or trained alone)."""
    return self.trains != 'all' or self.reinit_classifier


STAGES = {
  'plain': Stage(stages_lib.weighted_grads, paper='unweighted mean loss'),
  'cb': Stage(
    stages_lib.weighted_grads,
    class_weights='cb',
    hyperparameters={'cb_beta': _CB_BETA},
    paper='Cui et al., "Class-Balanced Loss Based on Effective Number of '
    'Samples", CVPR 2019',
  ),
  'ours': Stage(
    stages_lib.ours_grads,
    class_weights='cb',
    uses_dev=True,
    hyperparameters={
      'cb_beta': _CB_BETA,
      'eps_lr': Field(0.01, NUM, at_least(0), 'τ of the official code'),
      # 'sum': the official code; 'mean': the paper's equation.
      'inner_reduction': Field('sum', STR, choice(('sum', 'mean'))),
      'eps_grad': _EPS_GRAD,
    },
    paper='Jamal et al., CVPR 2020 (ltjax.meta_step)',
  ),
  'l2rw': Stage(
    stages_lib.l2rw_grads,
    uses_dev=True,
    hyperparameters={'eps_grad': _EPS_GRAD},
    paper='Ren et al., "Learning to Reweight Examples for Robust Deep '
    'Learning", ICML 2018',
  ),
  'mwn': Stage(
    stages_lib.mwn_grads,
    uses_dev=True,
    init_extra=stages_lib.mwn_init,
    hyperparameters={
      'eps_grad': _EPS_GRAD,
      'mwn_hidden': Field(100, INT, at_least(1), 'Shu et al.'),
      'mwn_lr': Field(1e-3, NUM, at_least(0, strict=True), 'Shu et al.'),
      'mwn_wd': Field(1e-4, NUM, at_least(0), 'Shu et al.'),
    },
    paper='Shu et al., "Meta-Weight-Net", NeurIPS 2019',
  ),
  'crt': Stage(
    functools.partial(stages_lib.part_grads, trains='classifier'),
    trains='classifier',
    sampler='class',
    reinit_classifier=True,
    lr='classifier',
    hyperparameters={'classifier_lr': _CLASSIFIER_LR},
    paper='Kang et al., "Decoupling Representation and Classifier for '
    'Long-Tailed Recognition", ICLR 2020 (classifier re-training)',
  ),
  'lws': Stage(
    functools.partial(stages_lib.part_grads, trains='class_scale'),
    trains='class_scale',
    sampler='class',
    lr='classifier',
    hyperparameters={'classifier_lr': _CLASSIFIER_LR},
    paper='Kang et al., ICLR 2020 (learnable weight scaling)',
  ),
}

# --- Post-hoc adjustments --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Posthoc:
  """A change of a trained model's logits, ``τ`` chosen on the dev set.

  Attributes:
    adjust: ``adjust(logits [..., n, C], head, class_counts, tau) -> logits``,
      NumPy; ``head`` is the classifier's parameters (``kernel [..., d, C]``,
      ``bias [..., C]``, with the seed axis of vmapped seeds).
    taus: the grid searched, in order (ties go to the first).
    paper: where it comes from.
  """

  adjust: Callable
  taus: tuple
  paper: str = ''


def tau_normalized(logits, head, class_counts, tau):
  """τ-normalization: the classifier weights ``w_c / ‖w_c‖^τ``, the bias
  kept (Kang et al.'s ``pnorm`` of the weights). Since ``z_c = f·w_c + b_c``,
  the new logits are ``(z_c - b_c) / ‖w_c‖^τ + b_c``: no features needed.
  ``τ = 0`` is the identity."""
  del class_counts
  norms = np.linalg.norm(np.asarray(head['kernel'], np.float64), axis=-2)
  bias = np.asarray(head.get('bias', 0.0), np.float64)
  bias = bias[..., None, :] if np.ndim(bias) else bias
  norms = norms[..., None, :]
  z = np.asarray(logits, np.float64)
  # z + (z - b)(‖w‖^-τ - 1): exactly z at τ = 0.
  return z + (z - bias) * (norms ** -float(tau) - 1.0)


def logit_adjusted(logits, head, class_counts, tau):
  """Post-hoc logit adjustment: ``z - τ log π`` (Menon et al., eq. 7)."""
  del head
  return np.asarray(logits, np.float64) - tau * losses_lib.log_class_prior(
    class_counts
  )


POSTHOC = {
  'tau_norm': Posthoc(
    tau_normalized,
    tuple(np.round(np.arange(0, 2.01, 0.1), 2)),
    'Kang et al., ICLR 2020 (τ-normalized classifier)',
  ),
  'logit_adjust': Posthoc(
    logit_adjusted,
    tuple(np.round(np.arange(0, 3.01, 0.25), 2)),
    'Menon et al., ICLR 2021 (post-hoc logit adjustment)',
  ),
}

# --- Methods -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Method:
  loss: str  # a key of LOSSES
  stage1: str  # keys of STAGES
  stage2: str
  posthoc: str | None = None  # a key of POSTHOC

  @property
  def stages(self) -> tuple[Stage, Stage]:
    return STAGES[self.stage1], STAGES[self.stage2]

  @property
  def uses_meta(self) -> bool:
    return any(s.uses_dev for s in self.stages)


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
  # Kang et al., ICLR 2020: a CE model, then its classifier decoupled.
  'crt': Method('ce', 'plain', 'crt'),
  'lws': Method('ce', 'plain', 'lws'),
  'tau_norm': Method('ce', 'plain', 'plain', posthoc='tau_norm'),
  # Menon et al., ICLR 2021; Ren et al., NeurIPS 2020.
  'la': Method('la', 'plain', 'plain'),
  'la_posthoc': Method('ce', 'plain', 'plain', posthoc='logit_adjust'),
  'bs': Method('bs', 'plain', 'plain'),
  'ours_la': Method('la', 'plain', 'ours'),
}


def get_method(name: str) -> Method:
  if name not in METHODS:
    raise ConfigError(
      f'unknown method {name!r} (config.method); choose one of '
      f'{sorted(METHODS)}.'
    )
  return METHODS[name]


def hyperparameters() -> dict[str, Field]:
  """Every loss's and stage's hyperparameter field (a field shared by
  several stages is declared the same in each)."""
  out = {}
  for spec in (*LOSSES.values(), *STAGES.values()):
    for name, field in spec.hyperparameters.items():
      if out.setdefault(name, field) != field:
        raise ValueError(f'{name} is declared twice, differently.')
  return out


def stage_fields() -> tuple[str, ...]:
  """The fields only a stage reads: a shared plain stage 1 ignores them."""
  return tuple(sorted({f for s in STAGES.values() for f in s.hyperparameters}))


def per_example_loss(method: Method, config, class_counts):
  """The per-example loss ``(logits, labels) -> [batch]`` of ``method``.

  Logits are cast to float32 first, so losses (and the meta step's ε) stay
  float32 when the model computes in bfloat16.
  """
  loss = LOSSES[method.loss].make(config, class_counts)

  def f32_loss(logits, labels):
    return loss(logits.astype(jnp.float32), labels)

  return f32_loss


def class_weights(stage: Stage, config, class_counts) -> Any:
  """The ``[C]`` float32 class weights ``stage`` declares."""
  if stage.class_weights == 'cb':
    w = weighting.class_balanced_weights(class_counts, config.cb_beta)
  else:
    w = np.ones(len(class_counts))
  return jnp.asarray(w, jnp.float32)


def logit_scale(method: Method, config) -> float:
  """The scale of the logits in the softmax the loss trains (calibration)."""
  field = LOSSES[method.loss].logit_scale
  return config[field] if field else 1.0
