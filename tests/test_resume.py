"""What may change on resume (ltjax.resume), rule by rule, on the configs
themselves: no training here (tests/test_faults.py resumes real runs)."""

import pytest

from ltjax import config_lib, resume

CONFIG = 'configs/cifar10_lt.py'


def config_of(method='ce', **fields):
  config = config_lib.from_file(CONFIG, f'source=npz,method={method}')
  for k, v in fields.items():
    config[k] = v
  return config


def saved(method='ce', **fields):
  return resume.fingerprint(config_of(method, **fields))


# The official schedule: 200 epochs, stage 2 from 160, lr drops at 160, 180.
STAGE1_END, MID_STAGE1, MID_STAGE2 = 160.0, 80.5, 170.0


@pytest.mark.parametrize(
  'method, fields',
  [
    ('ours_ce', {}),  # ce's stage 1 shared by ours_ce, cRT, LWS, ...
    ('crt', {'classifier_lr': 0.5}),
    ('ours_ce', {'eps_lr': 100.0, 'inner_reduction': 'mean'}),
    ('cb_finetune', {'cb_beta': 0.99, 'num_epochs': 250}),
    ('ce', {'stage2_epoch': 190, 'lr_boundaries': (190,)}),  # drops later
    ('ce', {'lr_decay': 0.5}),  # only drops after stage 1
  ],
)
def test_what_only_stage_2_reads_may_change_at_a_stage_1_checkpoint(
  method, fields
):
  # The prefix that experiments.reproduce shares: ce, 160 epochs.
  prefix = saved('ce', num_epochs=160, lr_boundaries=(160,))
  new = config_of(method, **fields)
  assert resume.conflicts(prefix, new, STAGE1_END) == []
  assert resume.conflicts(prefix, new, MID_STAGE1) == []


@pytest.mark.parametrize(
  'method, fields, differ',
  [
    ('focal', {}, ['method']),  # another loss: another stage 1
    ('cb_ce', {}, ['method']),  # another stage 1
    ('ce', {'seed': 3}, ['seed']),
    ('ce', {'learning_rate': 0.05}, ['learning_rate']),
    ('ce', {'warmup_epochs': 5}, ['warmup_epochs']),
    ('ce', {'lr_boundaries': (40, 180)}, ['lr_boundaries']),  # a past drop
    ('ce', {'batch_size': 128}, ['batch_size']),
    ('ce', {'weight_decay': 1e-4}, ['weight_decay']),
  ],
)
def test_what_stage_1_computed_may_not_change(method, fields, differ):
  assert resume.conflicts(saved('ce'), config_of(method, **fields), MID_STAGE1) == differ


def test_a_stage_1_field_of_a_meta_stage_1_may_not_change():
  # Meta-Weight-Net meta-learns from step 0: its rates are stage 1's.
  new = config_of('mwn', mwn_lr=1e-2)
  assert resume.conflicts(saved('mwn'), new, MID_STAGE1) == ['mwn_lr']
  assert resume.conflicts(saved('mwn'), config_of('mwn', eps_lr=5.0), MID_STAGE1) == []


def test_at_a_stage_2_checkpoint_only_the_resumable_fields_may_change():
  before = saved('ours_ce')
  new = config_of('ours_ce', eps_lr=100.0, num_epochs=250)
  assert resume.conflicts(before, new, MID_STAGE2) == ['eps_lr', 'num_epochs']
  assert resume.conflicts(before, new, None) == ['eps_lr', 'num_epochs']
  # A stage 2 moved before the checkpoint: the checkpoint is in stage 2.
  moved = config_of('ours_ce', stage2_epoch=50)
  assert resume.conflicts(before, moved, MID_STAGE1) == ['stage2_epoch']
  same = config_of('ours_ce', log_every_steps=7, keep_checkpoints=9)
  same.data.dir = '/elsewhere'
  assert resume.conflicts(before, same, MID_STAGE2) == []


def test_a_checkpoint_from_before_the_lr_scaling_resumes_under_its_config():
  # An older ltjax recorded no scaling fields and trained at learning_rate
  # whatever the batch size: read as reference_batch_size = batch_size.
  new_fields = ('scale_lr_with_batch', 'reference_batch_size')
  old = {k: v for k, v in saved('ours_ce').items() if k not in new_fields}
  assert resume.conflicts(old, config_of('ours_ce'), MID_STAGE2) == []
  # Trained at batch 50 (unscaled): today's config would scale to 50/100.
  old = {**old, 'batch_size': 50}
  now = config_of('ours_ce', batch_size=50)
  assert resume.conflicts(old, now, MID_STAGE2) == ['reference_batch_size']
  now.reference_batch_size = 50  # the rate it trained at
  assert resume.conflicts(old, now, MID_STAGE2) == []


def test_the_scaling_may_change_at_a_stage_1_checkpoint_if_the_rate_does_not():
  # At the config's own batch size the scaling gives the same rates.
  before = saved('ce')
  new = config_of('ce', scale_lr_with_batch=False)
  assert resume.conflicts(before, new, MID_STAGE1) == []


def test_epoch_rates_follow_the_step_schedule():
  # The trainer's float32 schedule per epoch, against the closed form
  # written out: warm-up, then drops.
  fields = {'learning_rate': 0.1, 'lr_decay': 0.01, 'lr_boundaries': [3, 5],
            'warmup_epochs': 2}  # fmt: skip
  rates = resume.epoch_rates(fields, 7)
  want = [0.05, 0.1, 0.1, 1e-3, 1e-3, 1e-5, 1e-5]
  assert rates == pytest.approx(want, rel=1e-6)


def test_epoch_rates_scale_with_the_batch_size():
  fields = {'learning_rate': 0.1, 'lr_decay': 0.01, 'lr_boundaries': [3],
            'warmup_epochs': 0, 'batch_size': 50, 'reference_batch_size': 100,
            'scale_lr_with_batch': True}  # fmt: skip
  assert resume.epoch_rates(fields, 4) == pytest.approx(
    [0.05] * 3 + [5e-4], rel=1e-6
  )


def test_the_refusal_names_the_fields_and_what_may_change(tmp_path):
  from ltjax.checkpoint import Checkpointer

  class Stub(Checkpointer):  # the metadata of one stage-2 checkpoint
    def __init__(self):
      self.workdir = str(tmp_path)

    def metadata(self, step):
      return {'config': saved('ours_ce'), 'steps_per_epoch': 10}

  with pytest.raises(resume.ResumeConfigError) as error:
    resume.check_checkpoint(config_of('ours_ce', eps_lr=1.0), Stub(), 1700)
  text = str(error.value)
  assert 'the checkpoint at step 1700 (epoch 170) was trained with eps_lr 0.01 -> 1.0' in text
  assert 'checkpoint of stage 2 only log_every_steps' in text
  assert 'fresh --workdir' in text
