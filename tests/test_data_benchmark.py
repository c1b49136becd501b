"""The data benchmark runs and prints its table (no timing is asserted)."""

import numpy as np
import pytest

pytest.importorskip('tensorflow')


def test_data_benchmark_smoke(capsys):
  from benchmarks import data_pipeline

  data_pipeline.main([
    '--num-images=48', '--side=40', '--batch-size=8', '--image-size=32',
    '--steps=2', '--warmup=1', '--cifar-images=300',
  ])  # fmt: skip
  out = capsys.readouterr().out
  assert '| pipeline | images/s | images/s per CPU |' in out
  for row in ('CIFAR, device', 'CIFAR, host NumPy', '| train:', '| eval:'):
    assert row in out


def test_standin_counts_match_the_released_split():
  from benchmarks import standin

  counts = standin.class_counts()
  # iNaturalist 2018 train: 437,513 images, 8,142 classes, 1,000 down to 2.
  assert counts.shape == (8142,) and counts.sum() == 437_513
  assert counts.max() == 1000 and counts.min() == 2
  assert (np.diff(counts) <= 0).all()  # sorted by rank: long-tailed
  tenth = standin.class_counts(0.1)
  assert tenth.min() == 3 and tenth.max() == 100
  assert 0.1 < tenth.sum() / counts.sum() < 0.15
