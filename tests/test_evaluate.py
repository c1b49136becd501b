"""Evaluation metrics against hand-computed values."""

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
