"""Configs built from the schema, and the learning rate's scaling with the
batch size (closed forms)."""

import pathlib
import types

import pytest

from ltjax import config_lib, fields, methods
from ltjax.config_schema import SCHEMA

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / 'configs').glob('*.py'))
SCHEDULE = dict(
  model='resnet32', batch_size=128, num_epochs=200, stage2_epoch=160,
  learning_rate=0.1, lr_boundaries=(160, 180), lr_decay=0.01,
  weight_decay=5e-4,
)  # fmt: skip


def flat(config, prefix=''):
  out = {}
  for k, v in config.items():
    if hasattr(v, 'items'):
      out.update(flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def test_base_config_has_every_field_of_the_schema_and_no_other():
  config = config_lib.base_config('cifar10', 'ldam_drw', **SCHEDULE)
  values = flat(config)
  assert sorted(values) == sorted(SCHEMA)
  # base_config sets every field without a default (the schedule).
  assert not any(v is fields.UNSET for v in values.values())
  for name, field in SCHEMA.items():
    if field.default is not fields.UNSET:
      assert values[name] == field.default, name
  # The fields that follow from the arguments.
  assert config.dev_batch_size == config.reference_batch_size == 128
  assert config.warmup_epochs == methods.LOSSES['ldam'].warmup_epochs == 5
  assert config.data.dev_per_class == 10


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_every_config_trains_at_its_own_rate_at_its_own_batch(path):
  config = config_lib.from_file(path)
  assert config.scale_lr_with_batch
  assert config.reference_batch_size == config.batch_size
  assert config_lib.effective_learning_rate(config) == config.learning_rate
  assert config_lib.lr_scaling_note(config) == ''


@pytest.mark.parametrize('batch', [1, 25, 64, 100, 128, 256, 1000])
def test_the_rate_scales_linearly_with_the_batch(batch):
  config = config_lib.from_file(REPO / 'configs' / 'cifar10_lt.py')
  assert (config.batch_size, config.learning_rate) == (100, 0.1)
  config.batch_size = batch
  # η · B / B_ref, the linear scaling rule.
  want = 0.1 * batch / 100
  assert config_lib.effective_learning_rate(config) == pytest.approx(
    want, rel=1e-15
  )
  config.scale_lr_with_batch = False
  assert config_lib.effective_learning_rate(config) == 0.1


def test_the_scaling_reads_only_four_fields():
  rate = config_lib.effective_learning_rate(
    types.SimpleNamespace(
      learning_rate=0.4, batch_size=96, reference_batch_size=256,
      scale_lr_with_batch=True,
    )
  )  # fmt: skip
  assert rate == pytest.approx(0.15, rel=1e-15)


def test_the_log_line_states_the_scaled_rate():
  config = config_lib.base_config('cifar10', 'ce', **SCHEDULE)
  config.batch_size = 64
  assert config_lib.lr_scaling_note(config) == (
    "lr 0.1 scaled to 0.05 for batch_size 64 (config's 128; "
    '--config.scale_lr_with_batch=False keeps 0.1)'
  )
  config.scale_lr_with_batch = False
  assert config_lib.lr_scaling_note(config) == (
    "lr 0.1 kept for batch_size 64 (config's 128; scale_lr_with_batch=False)"
  )
