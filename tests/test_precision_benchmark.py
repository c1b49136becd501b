"""Smoke test of benchmarks/precision.py: both dtypes train and are reported."""

import re

from benchmarks import precision


def test_reports_both_dtypes(cifar_prefix_npz, capsys):
  precision.main([
    f'--data_dir={cifar_prefix_npz.parent}', '--model=tiny', '--epochs=1',
    '--meta_epochs=1', '--seeds=2', '--imbalance=10',
  ])  # fmt: skip
  out = capsys.readouterr().out
  assert 'tiny, 1 epochs (1 meta), 2 seeds' in out and 'imbalance 10,' in out
  rows = re.findall(
    r'^\| (float32|bfloat16) \| ([\d., ]+) \| ([\d.]+) ±', out, re.M
  )
  assert [r[0] for r in rows] == ['float32', 'bfloat16']
  for _, per_seed, mean in rows:
    values = [float(v) for v in per_seed.split(',')]
    assert len(values) == 2 and all(0 <= v <= 100 for v in values)
    assert abs(sum(values) / 2 - float(mean)) < 0.01
  assert re.search(r'bfloat16 - float32: [+-]\d+\.\d\d points', out)
