"""Class-balanced weights against the closed form and the paper's example."""

import numpy as np
import pytest

import ltjax

# The list of the paper's presentation: CIFAR-10-LT, imbalance 10, n_max 5000,
# beta 0.9999.
PAPER_EXAMPLE = [
  0.2923, 0.3583, 0.4441, 0.5551, 0.6995, 0.8860, 1.1265, 1.4328, 1.8409,
  2.3588,
]  # fmt: skip


def cifar_lt_counts(n_max, imbalance, num_classes):
  return [
    int(n_max * (1 / imbalance) ** (i / (num_classes - 1)))
    for i in range(num_classes)
  ]


def test_reproduces_paper_example():
  counts = cifar_lt_counts(5000, 10, 10)
  weights = ltjax.class_balanced_weights(counts, beta=0.9999)
  np.testing.assert_allclose(weights, PAPER_EXAMPLE, atol=0.005, rtol=0)


@pytest.mark.parametrize('beta', [0.0, 0.9, 0.99, 0.9999, 0.999999])
def test_matches_direct_formula(beta):
  counts = np.array([4990, 2991, 1793, 1075, 644, 386, 231, 138, 83, 49])
  direct = (1 - beta) / (1 - np.power(beta, counts.astype(np.float64)))
  direct *= len(counts) / direct.sum()
  weights = ltjax.class_balanced_weights(counts, beta)
  np.testing.assert_allclose(weights, direct, rtol=1e-9)
  assert weights.sum() == pytest.approx(len(counts))


def test_limits():
  counts = [1000, 100, 10]
  # beta = 0: uniform; beta -> 1: inverse frequency.
  np.testing.assert_allclose(ltjax.class_balanced_weights(counts, 0.0), 1.0)
  inv = 1 / np.array(counts)
  np.testing.assert_allclose(
    ltjax.class_balanced_weights(counts, 1 - 1e-12), inv * 3 / inv.sum(),
    rtol=1e-6,
  )  # fmt: skip
  effective = ltjax.effective_number(counts, 0.9)
  np.testing.assert_allclose(effective, (1 - 0.9 ** np.array(counts)) / 0.1)


@pytest.mark.parametrize(
  'counts, match',
  [
    ([10, 0, 3], 'classes \\[1\\]'),
    ([10, -2], 'positive'),
    ([10.5, 2], 'integers'),
    ([], 'non-empty'),
    ([[1, 2]], '1-D'),
  ],
)
def test_bad_counts(counts, match):
  with pytest.raises(ValueError, match=match):
    ltjax.class_balanced_weights(counts)


@pytest.mark.parametrize('beta', [1.0, -0.1, 1.5])
def test_bad_beta(beta):
  with pytest.raises(ValueError, match='beta must lie in \\[0, 1\\)'):
    ltjax.class_balanced_weights([10, 5], beta)
