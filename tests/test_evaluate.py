"""Evaluation metrics against hand-computed values."""

import math

import numpy as np
import pytest

from ltjax import evaluate


def test_topk_and_per_class_by_hand():
  logits = np.array([
    [0.9, 0.1, 0.0, 0.0],  # label 0, rank 0
    [0.5, 0.2, 0.3, 0.0],  # label 1, rank 2 (behind 0 and 2)
    [0.1, 0.2, 0.3, 0.4],  # label 0, rank 3
    [0.0, 0.0, 0.0, 1.0],  # label 3, rank 0
  ])  # fmt: skip
  labels = np.array([0, 1, 0, 3])
  m = evaluate.classification_metrics(logits, labels, [500, 50, 30, 5])
  assert m['top1_error'] == pytest.approx(50.0)
  assert m['top3_error'] == pytest.approx(25.0)
  assert 'top5_error' not in m  # 4 classes only
  acc = m['per_class_accuracy']
  assert acc[0] == 50.0 and acc[1] == 0.0 and acc[2] is None and acc[3] == 100
  assert m['many_shot_accuracy'] == 50.0
  assert m['medium_shot_accuracy'] == 0.0  # class 2 has no test images
  assert m['few_shot_accuracy'] == 100.0


def test_only_strictly_larger_logits_rank_ahead():
  correct = evaluate.topk_correct(np.zeros((1, 6)), np.array([2]))
  assert correct[1].tolist() == [True]  # nothing strictly ahead
  correct = evaluate.topk_correct(np.array([[1.0, 1.0, 0.0]]), np.array([2]))
  assert correct[1].tolist() == [False] and correct[3].tolist() == [True]


def _ece_by_loop(logits, labels, num_bins, scale=1.0):
  """The textbook definition, one example and one bin at a time."""
  total, n = 0.0, len(labels)
  rows = []
  for row, y in zip(logits, labels, strict=True):
    e = [math.exp(scale * v - max(scale * row)) for v in row]
    p = [v / sum(e) for v in e]
    pred = max(range(len(p)), key=lambda c: (p[c], -c))
    rows.append((max(p), float(pred == y)))
  for b in range(num_bins):
    lo, hi = b / num_bins, (b + 1) / num_bins
    members = [(c, h) for c, h in rows if lo < c <= hi]
    if members:
      acc = sum(h for _, h in members) / len(members)
      conf = sum(c for c, _ in members) / len(members)
      total += len(members) / n * abs(acc - conf)
  return 100 * total


@pytest.mark.parametrize('scale', [1.0, 30.0])
def test_ece_matches_the_definition_on_made_up_logits(scale):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(400, 7)) * rng.uniform(0.1, 3, size=(400, 1))
  labels = rng.integers(0, 7, size=400)
  if scale != 1.0:
    logits = np.tanh(logits)  # a cosine head's range
  cal = evaluate.calibration(logits, labels, num_bins=15, logit_scale=scale)
  assert cal['ece'] == pytest.approx(_ece_by_loop(logits, labels, 15, scale))
  assert sum(cal['bins']['count']) == 400
  m = evaluate.classification_metrics(logits, labels, [100] * 7, scale)
  assert m['ece'] == pytest.approx(cal['ece'])


def test_ece_by_hand():
  # Confidences 0.9 (right), 0.9 (wrong), 0.6 (right): bins (13/15, 14/15]
  # and (8/15, 9/15]; ECE = 2/3 |0.5 - 0.9| + 1/3 |1 - 0.6| = 0.4.
  logits = np.log([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6]])
  cal = evaluate.calibration(logits, np.array([0, 1, 1]))
  assert cal['ece'] == pytest.approx(40.0)
  assert cal['bins']['count'][13] == 2 and cal['bins']['count'][8] == 1
  assert cal['bins']['accuracy'][13] == pytest.approx(50.0)  # percent
  assert cal['bins']['confidence'][8] == pytest.approx(60.0)
  assert cal['bins']['accuracy'][0] is None


def test_perfectly_confident_and_right_has_zero_ece():
  logits = np.array([[50.0, 0.0], [0.0, 50.0]])
  cal = evaluate.calibration(logits, np.array([0, 1]))
  assert cal['ece'] == pytest.approx(0.0, abs=1e-12)
  assert cal['bins']['count'][-1] == 2  # confidence 1 lies in the last bin
