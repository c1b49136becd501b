"""Long-tailed subsampling: exact profiles, dev carving, errors."""

import re

import numpy as np
import pytest

from ltjax import data

IMBALANCES = [200, 100, 50, 20, 10, 1]


def formula(n_max, num_classes, imbalance):
  return [
    int(n_max * (1 / imbalance) ** (i / (num_classes - 1)))
    for i in range(num_classes)
  ]


def cifar_labels(num_classes):
  return np.tile(np.arange(num_classes), 50000 // num_classes)


def test_cifar10_imbalance_100_counts():
  split = data.long_tail_split(cifar_labels(10), 10, 100)
  assert split.class_counts.tolist() == [
    4990, 2991, 1793, 1075, 644, 386, 231, 138, 83, 49,
  ]  # fmt: skip
  assert split.n_max == 4990


@pytest.mark.parametrize('imbalance', IMBALANCES)
@pytest.mark.parametrize('num_classes', [10, 100])
def test_cifar_counts_follow_the_formula(num_classes, imbalance):
  labels = cifar_labels(num_classes)
  split = data.long_tail_split(labels, num_classes, imbalance)
  n_max = (50000 - 10 * num_classes) / num_classes  # 4990 and 490
  expected = formula(n_max, num_classes, imbalance)
  assert split.class_counts.tolist() == expected
  assert np.bincount(labels[split.train], minlength=num_classes).tolist() == (
    expected
  )
  assert expected[-1] == int(n_max / imbalance)


def test_dev_set_is_balanced_disjoint_and_seeded():
  labels = cifar_labels(10)
  split = data.long_tail_split(labels, 10, 50, dev_per_class=10, seed=3)
  assert np.bincount(labels[split.dev], minlength=10).tolist() == [10] * 10
  assert not set(split.train.tolist()) & set(split.dev.tolist())
  assert len(np.unique(split.train)) == len(split.train)
  again = data.long_tail_split(labels, 10, 50, dev_per_class=10, seed=3)
  assert again.digest() == split.digest()
  np.testing.assert_array_equal(again.train, split.train)
  other = data.long_tail_split(labels, 10, 50, dev_per_class=10, seed=4)
  assert other.digest() != split.digest()
  assert not np.array_equal(other.dev, split.dev)


def test_step_profile_and_shot_groups():
  counts = data.step_profile(500, 10, 10)
  assert counts.tolist() == [500] * 5 + [50] * 5
  groups = data.shot_groups([101, 100, 20, 19, 1])
  assert groups['many'].tolist() == [0]
  assert groups['medium'].tolist() == [1, 2]
  assert groups['few'].tolist() == [3, 4]


def test_real_cifar_prefix_default_and_too_large_n_max(cifar_prefix_npz):
  with np.load(cifar_prefix_npz, allow_pickle=False) as f:
    labels = f['label']
  # 5,085 real images, 475..537 per class: the official default
  # n_max = (5085 - 100) / 10 = 498.5 fits every class.
  split = data.long_tail_split(labels, 10, 100)
  assert split.class_counts.tolist() == formula(498.5, 10, 100)
  assert np.bincount(labels[split.train], minlength=10).tolist() == (
    formula(498.5, 10, 100)
  )
  # Too large an n_max names the binding class (class 0: 517 - 10 = 507
  # left after the dev set) and the largest n_max that fits.
  with pytest.raises(ValueError, match='class 0 has 507 images') as info:
    data.long_tail_split(labels, 10, 100, n_max=600)
  fit = int(re.search(r'largest n_max that fits is (\d+)', str(info.value))[1])
  available = np.bincount(labels, minlength=10) - 10
  assert np.all(np.array(formula(fit, 10, 100)) <= available)
  assert np.any(np.array(formula(fit + 1, 10, 100)) > available)
  data.long_tail_split(labels, 10, 100, n_max=fit)


@pytest.mark.parametrize(
  'kwargs, match',
  [
    ({'imbalance': 0.5}, 'imbalance factor must be >= 1'),
    ({'imbalance': 10, 'dev_per_class': 5001}, 'class 0 has only 5000'),
    ({'imbalance': 10, 'profile': 'linear'}, "unknown profile 'linear'"),
    ({'imbalance': 10, 'n_max': 6000}, 'largest n_max that fits is 4990'),
  ],
)
def test_bad_inputs(kwargs, match):
  with pytest.raises(ValueError, match=match):
    data.long_tail_split(cifar_labels(10), 10, **kwargs)


def test_labels_out_of_range():
  with pytest.raises(ValueError, match=r'labels must lie in \[0, 3\)'):
    data.long_tail_split(np.array([0, 1, 5]), 3, 1, dev_per_class=0)
