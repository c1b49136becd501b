"""The data benchmark runs and prints its table (no timing is asserted)."""

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
