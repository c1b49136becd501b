"""Smoke test of benchmarks/train_run.py: whole runs, 1 and 2 seeds."""

import re

import pytest

from benchmarks import cli, train_run

TINY = [
  '--model=tiny', '--batch_size=8', '--dev_batch_size=4', '--image_size=8',
  '--pool_per_class=120', '--log_every_steps=2', '--epochs=2',
  '--meta_epochs=1', '--seeds=1,2',
]  # fmt: skip


def test_table_with_seed_ratio(capsys):
  text = train_run.main(TINY)
  assert text in capsys.readouterr().out
  rows = re.findall(
    r'^\| float32 \| (\d) \| 2 \(1\) \| (\d+) \| (.*)$', text, re.M
  )
  assert [r[0] for r in rows] == ['1', '2']
  steps = {int(r[1]) for r in rows}
  assert len(steps) == 1 and steps.pop() > 0  # the same schedule for both
  for seeds, _, rest in rows:
    wall, ms1, ms2, ratio, error = (c.strip() for c in rest.split('|')[:5])
    assert float(wall) > 0 and float(ms1) > 0 and float(ms2) > 0
    if seeds == '1':
      assert ratio == '–' and 0 <= float(error) <= 100
    else:  # step time of 2 seeds over 1 seed's, per stage; mean ± std
      assert re.fullmatch(r'\d+\.\d\dx / \d+\.\d\dx', ratio), ratio
      assert re.fullmatch(r'\d+\.\d\d ± \d+\.\d\d', error), error


def test_bad_flags():
  with pytest.raises(SystemExit):
    train_run.parse_args(['--epochs=2', '--meta_epochs=3'])
  with pytest.raises(SystemExit):
    train_run.parse_args(['--seeds=0'])
  with pytest.raises(SystemExit):
    train_run.parse_args(['--dtypes=float16'])


def test_shortened_variant_drops_the_lr_once_when_the_meta_stage_starts():
  from ltjax import config_lib, train_step

  path = cli.CIFAR_CONFIG
  variant = 'method=ours_ce,source=npz,epochs=15,meta_epochs=5'
  config = train_run.make_config(
    config_lib.from_file(path, variant),
    train_run.parse_args(['--epochs=15', '--meta_epochs=5']),
    'float32',
    1,
  )
  lr = train_step.learning_rate_fn(config, steps_per_epoch=10)
  assert (config.num_epochs, config.stage2_epoch) == (15, 10)
  assert config.eval_every_epochs == 15
  assert float(lr(99)) == pytest.approx(0.1, rel=1e-6)  # last stage-1 step
  assert float(lr(100)) == pytest.approx(1e-3, rel=1e-6)  # meta, as official
  assert float(lr(149)) == pytest.approx(1e-3, rel=1e-6)

  official = config_lib.from_file(path, 'epochs=200,meta_epochs=40')
  assert tuple(official.lr_boundaries) == (160, 180)
  with pytest.raises(ValueError, match='meta_epochs <= epochs'):
    config_lib.from_file(path, 'epochs=2,meta_epochs=3')


def test_bfloat16_against_float32_on_the_real_images(cifar_prefix_npz):
  text = train_run.main([
    f'--data_dir={cifar_prefix_npz.parent}', '--model=tiny', '--epochs=1',
    '--meta_epochs=1', '--seeds=2', '--imbalance=100', '--log_every_steps=2',
    '--dtypes=float32,bfloat16',
  ])  # fmt: skip
  assert 'imbalance 100, real images' in text
  rows = re.findall(
    r'^\| (float32|bfloat16) \| 2 \|.*\| ([\d.]+) ± [\d.]+ \| ([\d., ]+) \|$',
    text,
    re.M,
  )
  assert [r[0] for r in rows] == ['float32', 'bfloat16']
  for _, mean, per_seed in rows:
    values = [float(v) for v in per_seed.split(',')]
    assert len(values) == 2 and all(0 <= v <= 100 for v in values)
    assert abs(sum(values) / 2 - float(mean)) < 0.01
  assert re.search(
    r'bfloat16 - float32, 2 seed\(s\): [+-]\d+\.\d\d points', text
  )
