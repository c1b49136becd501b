"""Smoke tests of benchmarks/meta_step.py on a tiny model: it runs and prints.

No timing is asserted: the numbers depend on the machine.
"""

import pytest

pytest.importorskip('torch', reason='the benchmark compares with PyTorch')

from benchmarks import conv_layers, meta_step  # noqa: E402
from tests.tables import EVERY_ROW, rows  # noqa: E402

TINY = [
  '--model=tiny', '--batch_size=4', '--dev_batch_size=3', '--image_size=8',
  '--num_classes=5', '--repeats=1', '--warmup=1',
]  # fmt: skip


def test_table_has_every_step_and_implementation(capsys):
  text = meta_step.main([*TINY, '--memory=false'])
  assert text in capsys.readouterr().out
  assert '| step | implementation | ms/step (median) |' in text
  table = rows(text)
  assert [r[:2] for r in table] == EVERY_ROW
  for r in table:
    assert float(r[2]) >= 0 and float(r[3]) > 0  # ms/step, images/s
  assert table[2][5] != '–' and table[3][5] != '–'  # meta/CE time
  assert float(table[0][8]) > 0 and float(table[2][8]) > 0  # XLA buffers
  assert 'Warning' not in text  # finite losses


def test_memory_probe_and_selection():
  text = meta_step.main([*TINY, '--which=ce', '--impls=torch', '--memory=1'])
  (row,) = rows(text)
  assert row[:2] == ['ce', 'torch']
  assert float(row[6]) >= 0  # peak RSS rise, from a subprocess


def test_bad_flags():
  with pytest.raises(SystemExit):
    meta_step.parse_args(['--which=ce,backward'])


def test_conv_layers_table():
  text = conv_layers.main(
    ['--batch_size=2', '--repeats=1', '--conv_impl=cpu', '--xla_options=on']
  )
  lines = [line for line in text.splitlines() if line.startswith('| ')]
  assert len(lines) == 1 + len(conv_layers.LAYERS) + 1  # header, rows, total
  assert 'torch' in lines[0] and 'ltjax cpu' in lines[0]
  assert lines[-1].startswith('| ResNet-32 total | 31 |')
