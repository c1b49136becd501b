"""The array source: real CIFAR-10 through load_npz, and its bad inputs."""

import numpy as np
import pytest

from ltjax import data


def test_real_cifar_prefix_file(cifar_prefix_npz):
  split = data.load_npz(cifar_prefix_npz, num_classes=10)
  assert split.image.shape == (5085, 32, 32, 3)
  assert split.image.dtype == np.uint8 and split.label.dtype == np.int32
  # Per-class counts as documented in shared/data/README.md.
  assert np.bincount(split.label).tolist() == [
    517, 524, 490, 493, 537, 475, 503, 516, 529, 501,
  ]  # fmt: skip
  # Real photographs, not blank arrays: every image has texture.
  assert split.image.reshape(5085, -1).std(axis=1).min() > 1
  sub = split.subset([3, 1])
  np.testing.assert_array_equal(sub.image[1], split.image[1])
  assert sub.label.tolist() == [split.label[3], split.label[1]]


def test_balanced_holdout_partitions():
  labels = np.repeat(np.arange(4), [5, 7, 9, 3])
  holdout, rest = data.balanced_holdout(labels, 4, 2, seed=1)
  assert np.bincount(labels[holdout], minlength=4).tolist() == [2] * 4
  assert sorted(np.concatenate([holdout, rest]).tolist()) == list(range(24))
  again, _ = data.balanced_holdout(labels, 4, 2, seed=1)
  np.testing.assert_array_equal(again, holdout)
  with pytest.raises(ValueError, match='class 3 has 3 examples'):
    data.balanced_holdout(labels, 4, 4)


def _save(path, **arrays):
  np.savez(path, **arrays)
  return path


IMG = np.zeros((4, 8, 8, 3), np.uint8)
LBL = np.array([0, 1, 2, 1])


@pytest.mark.parametrize(
  'arrays, error, match',
  [
    ({'image': IMG}, ValueError, r"lacks key\(s\) \['label'\]"),
    ({'image': IMG.astype(np.float32), 'label': LBL}, ValueError, 'uint8'),
    ({'image': IMG[:, :, :, 0], 'label': LBL}, ValueError, r'\[N, H, W, C\]'),
    ({'image': IMG, 'label': LBL[:3]}, ValueError, '4 images but 3 labels'),
    ({'image': IMG, 'label': LBL + 2}, ValueError, r'labels must lie in'),
    (
      {'image': IMG, 'label': np.array([0, 'a', 1, 2], object)},
      ValueError,
      'object',
    ),
  ],
)
def test_malformed_npz(tmp_path, arrays, error, match):
  path = _save(tmp_path / 'bad.npz', **arrays)
  with pytest.raises(error, match=match):
    data.load_npz(path, num_classes=3)


def test_missing_and_unreadable_files(tmp_path):
  with pytest.raises(FileNotFoundError, match='no such file.*np.savez'):
    data.load_npz(tmp_path / 'absent.npz')
  (tmp_path / 'junk.npz').write_bytes(b'not a zip file')
  with pytest.raises(ValueError, match='not a readable .npz'):
    data.load_npz(tmp_path / 'junk.npz')


def test_an_empty_class_names_the_class_and_the_real_fix():
  # 4 classes declared, class 2 absent: no holdout or subset size can help.
  labels = np.array([0, 0, 1, 1, 3, 3])
  for call in (
    lambda: data.balanced_holdout(labels, 4, 1),
    lambda: data.long_tail_split(labels, 4, imbalance=2.0, dev_per_class=1),
  ):
    with pytest.raises(ValueError) as error:
      call()
    text = str(error.value)
    assert 'class 2 has no examples' in text and 'Set num_classes' in text
    assert 'at most 0' not in text
