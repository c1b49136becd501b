"""Evaluation metrics of long-tail papers, from predictions on a test set.

Top-k error, per-class accuracy, the accuracy of the many/medium/few-shot
class groups (more than 100, 20 to 100, fewer than 20 training images) and the
expected calibration error, all on a balanced test set. Pure NumPy on host
arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ltjax.data.longtail import shot_groups

TOP_K = (1, 3, 5)
ECE_BINS = 15


def topk_correct(logits, labels, ks=TOP_K) -> dict[int, np.ndarray]:
  """``{k: [n] bool}``: whether the label is among the ``k`` largest logits.

  Only strictly larger logits rank ahead of the label, so exact ties (rare
  with float logits) count in the example's favour.
  """
  logits = np.asarray(logits, np.float64)
  labels = np.asarray(labels)
  label_logit = np.take_along_axis(logits, labels[:, None], axis=1)
  rank = (logits > label_logit).sum(axis=1)  # classes strictly ahead
  return {k: rank < k for k in ks if k <= logits.shape[1]}


def calibration(logits, labels, num_bins=ECE_BINS, logit_scale=1.0) -> dict:
  """Expected calibration error of the top-1 prediction, and its bins.

  With confidence ``p_i = max_c softmax(s * logits_i)_c`` of the predicted
  class ``argmax_c logits_i`` and equal-width bins ``B_b = ((b-1)/M, b/M]``,
  ``b = 1..M`` (Guo et al., "On Calibration of Modern Neural Networks",
  ICML 2017)::

    ECE = sum_b |B_b| / n * |acc(B_b) - conf(B_b)|

  Args:
    logits: ``[n, C]`` scores.
    labels: ``[n]`` true classes.
    num_bins: ``M``, 15 as in Guo et al. and the long-tail papers after it.
    logit_scale: ``s``; the probabilities a loss trains, e.g. LDAM's scale
      for a cosine head whose raw outputs lie in ``[-1, 1]``.

  Returns:
    ``{'ece': percent, 'bins': {'count', 'confidence', 'accuracy'}}``, each
    bin list of length ``M`` (confidence and accuracy in percent, as every
    figure of a run's records; None for an empty bin).
  """
  z = np.asarray(logits, np.float64) * logit_scale
  z = z - z.max(axis=1, keepdims=True)
  e = np.exp(z)  # the top class's is exp(0) = 1: its probability is 1 / sum
  conf = 1.0 / e.sum(axis=1)
  hit = (e.argmax(axis=1) == np.asarray(labels)).astype(np.float64)
  # Bin b holds (b/M, (b+1)/M]: right-closed, so confidence 1 is in the last.
  b = np.clip(np.ceil(conf * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
  count = np.bincount(b, minlength=num_bins)
  conf_sum = np.bincount(b, weights=conf, minlength=num_bins)
  hit_sum = np.bincount(b, weights=hit, minlength=num_bins)
  ece = np.abs(hit_sum - conf_sum).sum() / max(len(conf), 1)
  nonempty = count > 0
  safe = np.maximum(count, 1)

  def per_bin(sums):
    return [
      100 * float(v) if k else None
      for v, k in zip(sums / safe, nonempty, strict=True)
    ]

  return {
    'ece': 100 * float(ece),
    'bins': {
      'count': count.tolist(),
      'confidence': per_bin(conf_sum),
      'accuracy': per_bin(hit_sum),
    },
  }


def classification_metrics(
  logits, labels, train_class_counts, logit_scale=1.0
) -> dict:
  """Metrics of ``logits [n, C]`` against ``labels [n]``.

  Args:
    logits: ``[n, C]`` scores of the test examples.
    labels: ``[n]`` true classes.
    train_class_counts: ``[C]`` training images per class (for the groups).
    logit_scale: multiplies the logits before the softmax of the
      calibration error (see :func:`calibration`).

  Returns:
    A JSON-ready dict: ``top{k}_error`` (percent), ``per_class_accuracy``
    (``[C]`` list, percent; None for a class without test images),
    ``{many,medium,few}_shot_accuracy`` (percent, the mean over the group's
    classes; None for an empty group), ``ece`` (percent) with its
    ``reliability`` bins, and ``num_examples``.
  """
  labels = np.asarray(labels)
  counts = np.asarray(train_class_counts)
  num_classes = len(counts)
  correct = topk_correct(logits, labels)
  out = {
    f'top{k}_error': 100 * (1 - float(c.mean())) for k, c in correct.items()
  }
  hits = np.bincount(labels, weights=correct[1], minlength=num_classes)
  seen = np.bincount(labels, minlength=num_classes)
  with np.errstate(invalid='ignore', divide='ignore'):
    per_class = 100 * hits / seen
  out['per_class_accuracy'] = [
    None if np.isnan(a) else float(a) for a in per_class
  ]
  for name, classes in shot_groups(counts).items():
    acc = per_class[classes]
    acc = acc[~np.isnan(acc)]
    out[f'{name}_shot_accuracy'] = float(acc.mean()) if acc.size else None
  cal = calibration(logits, labels, logit_scale=logit_scale)
  out['ece'] = cal['ece']
  out['reliability'] = cal['bins']
  out['num_examples'] = int(len(labels))
  return out


SUMMARY_KEYS = (
  'top1_error',
  'top3_error',
  'top5_error',
  'many_shot_accuracy',
  'medium_shot_accuracy',
  'few_shot_accuracy',
  'ece',
)


def summarize_seeds(per_seed: list[dict]) -> dict:
  """Mean and standard deviation over seeds of the headline test metrics.

  Args:
    per_seed: per seed, ``{'last': record, 'dev_selected': record}`` with
      ``record['test']`` from :func:`classification_metrics`.

  Returns:
    ``{'last' | 'dev_selected': {metric: {'mean', 'std', 'values'}}}``; the
    standard deviation is the sample one (``ddof=1``).
  """
  out = {}
  for which in ('last', 'dev_selected'):
    out[which] = {}
    for key in SUMMARY_KEYS:
      values = [r[which]['test'].get(key) for r in per_seed]
      if any(v is None for v in values):
        continue
      values = np.asarray(values, np.float64)
      out[which][key] = {
        'mean': float(values.mean()),
        'std': float(values.std(ddof=1)) if len(values) > 1 else None,
        'values': values.tolist(),
      }
  return out


# --- The records of a run's evaluations (evals.jsonl, results.json) ----------


class Posthoc(NamedTuple):
  """A post-hoc change of the logits, ``τ`` chosen on the dev set.

  ``adjust(logits, head, class_counts, tau)``; ``taus``: the grid, ties to
  the first; ``head``: the classifier's parameters with a leading seed axis.
  """

  adjust: Callable
  taus: tuple
  head: dict


def choose_tau(posthoc: Posthoc, dev_logits, dev_labels, counts, head):
  """The first ``τ`` of the grid with the lowest dev top-1 error."""
  errors = [
    classification_metrics(
      posthoc.adjust(dev_logits, head, counts, tau), dev_labels, counts
    )['top1_error']
    for tau in posthoc.taus
  ]
  return posthoc.taus[int(np.argmin(errors))]


SIGNIFICANT_DIGITS = 6


def rounded(tree, digits: int = SIGNIFICANT_DIGITS):
  """``tree`` (dicts, lists, numbers) with every float to ``digits``
  significant digits: ``46.699999999999996`` is ``46.7``, and ε's ``1e-5``
  scale keeps its digits."""
  if isinstance(tree, dict):
    return {k: rounded(v, digits) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [rounded(v, digits) for v in tree]
  if isinstance(tree, float):
    return float(f'{tree:.{digits}g}')
  return tree


def eval_records(
  step, epoch, test, dev, class_counts, logit_scale=1.0, posthoc=None
):
  """One record per seed of an evaluation.

  Args:
    step, epoch: when the evaluation ran.
    test, dev: ``(logits [S, n, C], labels [n])`` of the test and dev sets
      for ``S`` seeds.
    class_counts: ``[C]`` training images per class.
    logit_scale: see :func:`calibration`.
    posthoc: a :class:`Posthoc`, or None. Each seed's logits, test and dev
      alike, are adjusted with the ``τ`` of its lowest dev error (recorded as
      ``posthoc_tau``); the test set never chooses.

  Returns:
    ``[{'step', 'epoch', 'dev_top1_error', 'test': metrics}]``, one per seed.
  """
  (test_logits, test_labels), (dev_logits, dev_labels) = test, dev
  records = []
  for i, (t, d) in enumerate(zip(test_logits, dev_logits, strict=True)):
    extra = {}
    if posthoc is not None:
      head = {k: np.asarray(v)[i] for k, v in posthoc.head.items()}
      tau = choose_tau(posthoc, d, dev_labels, class_counts, head)
      t = posthoc.adjust(t, head, class_counts, tau)
      d = posthoc.adjust(d, head, class_counts, tau)
      extra['posthoc_tau'] = float(tau)
    records.append({
      'step': step,
      'epoch': epoch,
      'dev_top1_error': classification_metrics(d, dev_labels, class_counts)[
        'top1_error'
      ],
      'test': classification_metrics(t, test_labels, class_counts, logit_scale),
      **extra,
    })  # fmt: skip
  return rounded(records)


def eval_row(records) -> dict:
  """One line of ``evals.jsonl``: ``{'step', 'epoch', 'seeds': [...]}``,
  the records of every seed (any number of them) without their step."""
  step, epoch = records[0]['step'], records[0]['epoch']
  seeds = [
    {k: v for k, v in r.items() if k not in ('step', 'epoch')} for r in records
  ]
  return {'step': step, 'epoch': epoch, 'seeds': seeds}


def row_records(row) -> list[dict]:
  """The inverse of :func:`eval_row`; a row of an older ltjax (one seed,
  no ``seeds`` list) is that seed's record."""
  if 'seeds' not in row:
    return [row]
  return [
    {'step': row['step'], 'epoch': row['epoch'], **r} for r in row['seeds']
  ]


def last_and_dev_selected(evals) -> list[dict]:
  """Per seed, ``{'last', 'dev_selected'}`` of ``evals`` (a list of
  :func:`eval_records`): the dev set selects, ties to the later step."""
  return [
    {
      'last': evals[-1][s],
      'dev_selected': min(
        (e[s] for e in evals), key=lambda r: (r['dev_top1_error'], -r['step'])
      ),
    }
    for s in range(len(evals[-1]))
  ]


def weight_stats_table(stats) -> dict:
  """Per-class mean and spread of ε and of ``w + ε`` over the meta stage.

  Args:
    stats: ``[C, 5]`` sums: count, ``Σε``, ``Σε²``, ``Σ(w+ε)``, ``Σ(w+ε)²``.
  """
  stats = np.asarray(stats, np.float64)
  count = np.maximum(stats[:, 0], 1)
  mean_e, mean_w = stats[:, 1] / count, stats[:, 3] / count
  return {
    'count': stats[:, 0].tolist(),
    'eps_mean': mean_e.tolist(),
    'eps_std': np.sqrt(np.maximum(stats[:, 2] / count - mean_e**2, 0)).tolist(),
    'weight_mean': mean_w.tolist(),
    'weight_std': np.sqrt(
      np.maximum(stats[:, 4] / count - mean_w**2, 0)
    ).tolist(),
  }
