"""Every bad setting stops before any data is read, naming field and fix."""

import functools
import pathlib
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

import ltjax
from ltjax import config_check, config_lib, fields, main, methods, train
from ltjax.config_schema import SCHEMA

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / 'configs').glob('*.py'))


def cifar(arg='source=npz'):
  return config_lib.from_file(REPO / 'configs' / 'cifar10_lt.py', arg)


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize('method', sorted(methods.METHODS))
def test_every_shipped_config_passes(path, method, tmp_path):
  config = config_lib.from_file(path, f'method={method}')
  if config.init_from is None:  # required (Places-LT): the check says so
    with pytest.raises(config_check.ConfigError, match='init_from is required'):
      config_check.check(config)
    config.init_from = str(tmp_path / 'weights.pth')
    (tmp_path / 'weights.pth').write_bytes(b'')
  config_check.check(config)


@pytest.mark.parametrize(
  'field, value, allowed',
  [
    # Stage-2 fields are checked at start, not when stage 2 begins.
    ('eps_grad', 'foo', "one of ['jvp', 'unroll']"),
    ('inner_reduction', 'avg', "one of ['mean', 'sum']"),
    ('learning_rate', -0.1, '> 0'),
    ('momentum', 1.0, 'in [0, 1)'),
    ('weight_decay', -1e-4, '>= 0'),
    ('lr_decay', 0.0, 'in (0, 1]'),
    ('lr_decay', 2.0, 'in (0, 1]'),
    ('warmup_epochs', -1, '>= 0'),
    ('focal_gamma', -1.0, '>= 0'),
    ('cb_beta', 1.0, 'in [0, 1)'),
    ('eps_lr', -0.01, '>= 0'),
    ('mwn_hidden', 0, '>= 1'),
    ('mwn_lr', 0.0, '> 0'),
    ('mwn_wd', -1.0, '>= 0'),
    ('ldam_scale', 0.0, '> 0'),
    ('eval_batch_size', 0, '>= 1'),
    ('eval_every_epochs', 0, '>= 1'),
    ('log_every_steps', 0, '>= 1'),
    ('checkpoint_every_steps', 0, '>= 1'),
    ('keep_checkpoints', 0, '>= 1'),
    ('compute_dtype', 'float16', "one of ['bfloat16', 'float32']"),
    ('lr_boundaries', (-1, 160), 'epochs >= 0'),
    ('lr_boundaries', (180, 160), 'increasing order'),
    ('stage2_epoch', 201, 'in [0, num_epochs=200]'),
    ('learning_rate', float('nan'), 'a finite number'),
  ],
)
def test_bad_field_names_field_value_and_what_is_allowed(field, value, allowed):
  config = cifar()
  config[field] = value
  with pytest.raises(config_check.ConfigError) as info:
    config_lib.check_config(config)
  message = str(info.value)
  assert f'config.{field}=' in message and allowed in message, message
  assert f'--config.{field}=' in message


@pytest.mark.parametrize(
  'field, value, match',
  [
    ('profile', 'linear', "one of ['exp', 'step']"),
    ('dev_source', 'test', "one of ['carve', 'validation']"),
    ('dev_per_class', -1, '>= 0'),
    ('n_max', -5.0, '>= 0'),
  ],
)
def test_bad_data_field(field, value, match):
  config = cifar()
  config.data[field] = value
  with pytest.raises(config_check.ConfigError, match=f'config.data.{field}='):
    config_lib.check_config(config)
  with pytest.raises(config_check.ConfigError) as info:
    config_lib.check_config(config)
  assert match in str(info.value)


def test_vectorized_seeds_need_an_array_dataset():
  config = config_lib.from_file(REPO / 'configs' / 'inat2018.py')
  config.num_seeds = 2
  with pytest.raises(config_check.ConfigError, match='num_seeds=2'):
    config_lib.check_config(config)


@functools.cache
def _good() -> dict:
  return cifar().to_dict()


def _with(name, value):
  """The npz variant of configs/cifar10_lt.py with field ``name`` (dotted)
  set to ``value``, whatever its type (a ConfigDict built anew from a dict,
  as type-safe assignment would refuse another type)."""
  node = values = {**_good(), 'data': dict(_good()['data'])}
  *parents, leaf = name.split('.')
  for part in parents:
    node = node[part]
  node[leaf] = value
  return ml_collections.ConfigDict(values)


# A value outside its rule, of the right type, for every field of the schema
# that has a rule (test_the_table_of_bad_values_covers_the_schema).
OUT_OF_RULE = {
  'dataset': 'mnist',
  'method': 'magic',
  'model': 'vgg',
  'num_classes': 1,
  'num_seeds': 0,
  'compute_dtype': 'float16',
  'batch_size': 0,
  'dev_batch_size': 0,
  'eval_batch_size': 0,
  'num_epochs': 0,
  'stage2_epoch': -1,
  'learning_rate': 0.0,
  'reference_batch_size': 0,
  'lr_boundaries': (180, 160),
  'lr_decay': 1.5,
  'momentum': 1.0,
  'weight_decay': -1e-4,
  'focal_gamma': -1.0,
  'ldam_max_margin': 0.0,
  'ldam_scale': 0.0,
  'la_tau': -1.0,
  'cb_beta': 1.0,
  'eps_lr': -0.01,
  'inner_reduction': 'avg',
  'eps_grad': 'foo',
  'mwn_hidden': 0,
  'mwn_lr': 0.0,
  'mwn_wd': -1.0,
  'classifier_lr': 0.0,
  'warmup_epochs': -1,
  'eval_every_epochs': 0,
  'log_every_steps': 0,
  'checkpoint_every_steps': 0,
  'keep_checkpoints': 0,
  'data.imbalance': 0.5,
  'data.profile': 'linear',
  'data.n_max': -5.0,
  'data.dev_per_class': -1,
  'data.test_per_class': -1,
  'data.dev_source': 'test',
  'image_size': 0,
}
# Values of another type than each kind (None is a placeholder: required).
WRONG_TYPE = {
  fields.INT: (2.5, '3', True),
  fields.NUM: ('0.1', True, float('inf')),
  fields.STR: (3, b'x'),
  fields.BOOL: (1, 'True'),
  fields.INTS: ('160', (1.5,), 160),
}


def test_the_table_of_bad_values_covers_the_schema():
  constrained = {name for name, f in SCHEMA.items() if f.constrained}
  assert set(OUT_OF_RULE) == constrained, (
    'a field with a rule needs a value outside it in OUT_OF_RULE'
  )
  for name, value in OUT_OF_RULE.items():  # the rule is tested, not the type
    assert fields.has_type(value, SCHEMA[name].kind), name
  assert set(WRONG_TYPE) == {f.kind for f in SCHEMA.values()}
  config_check.check(ml_collections.ConfigDict(_good()))  # the rest is good


@pytest.mark.parametrize('name', sorted(OUT_OF_RULE))
def test_every_rule_refuses_a_value_outside_it(name):
  value = OUT_OF_RULE[name]
  with pytest.raises(config_check.ConfigError) as info:
    config_check.check(_with(name, value))
  message = str(info.value)
  assert f'config.{name}={value!r} is not allowed: use ' in message, message
  assert str(SCHEMA[name].rule[1]) in message and f'--config.{name}=' in message


@pytest.mark.parametrize('name', sorted(SCHEMA))
def test_every_field_refuses_a_value_of_another_type(name):
  kind = SCHEMA[name].kind
  for value in WRONG_TYPE[kind]:
    with pytest.raises(config_check.ConfigError) as info:
      config_check.check(_with(name, value))
    message = str(info.value)
    assert f'config.{name}={value!r} is not allowed: use ' in message, message
    assert fields.KIND_TEXT[kind] in message


def test_a_missing_or_placeholder_field_is_named():
  values = {**_good(), 'data': dict(_good()['data'])}
  del values['data']['profile']
  with pytest.raises(config_check.ConfigError, match='data.profile is missing'):
    config_check.check(ml_collections.ConfigDict(values))
  with pytest.raises(
    config_check.ConfigError,
    match=r'config.la_tau is required by this config .* --config.la_tau=',
  ):
    config_check.check(_with('la_tau', None))


def test_config_error_is_one_class_everywhere():
  assert config_check.ConfigError is ltjax.ConfigError
  assert issubclass(ltjax.ConfigError, ltjax.Error)
  assert issubclass(ltjax.ConfigError, ValueError)  # old excepts still hold
  for name in ('UnreadableCheckpointError', 'WorkdirBusyError', 'DataError'):
    assert issubclass(getattr(ltjax, name), ltjax.Error)
  from ltjax import checkpoint, resume, workdir_lock

  assert checkpoint.UnreadableCheckpointError is ltjax.UnreadableCheckpointError
  assert workdir_lock.WorkdirBusyError is ltjax.WorkdirBusyError
  assert resume.ResumeConfigError is ltjax.ResumeConfigError


def test_cli_prints_an_ltjax_error_as_one_line_and_others_with_traceback(
  monkeypatch, capsys
):
  # main.run is what the command line runs once the flags are parsed.
  def raise_(error):
    def train_and_evaluate(config, workdir):
      raise error

    monkeypatch.setattr(train, 'train_and_evaluate', train_and_evaluate)

  raise_(ltjax.DataError('class 3 has no images; add some.'))
  with pytest.raises(SystemExit) as stop:
    main.run(None, 'w')
  assert stop.value.code == 2
  assert capsys.readouterr().err == (
    'ltjax: error: class 3 has no images; add some.\n'
    '(--debug shows the traceback)\n'
  )
  with pytest.raises(ltjax.DataError):  # --debug: the traceback
    main.run(None, 'w', debug=True)
  try:  # a ValueError from a library is not ltjax's: its traceback shows
    np.zeros(-1)
  except ValueError as error:
    raise_(error)
  with pytest.raises(ValueError, match='negative dimensions'):
    main.run(None, 'w')
  assert capsys.readouterr().err == ''


def test_cli_prints_the_message_without_a_traceback(tmp_path):
  cmd = [
    sys.executable, '-m', 'ltjax.main', f'--workdir={tmp_path / "w"}',
    '--config=configs/cifar10_lt.py:source=npz', '--config.eps_grad=foo',
  ]  # fmt: skip
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
  assert proc.returncode == 2
  assert "ltjax: error: config.eps_grad='foo' is not allowed" in proc.stderr
  assert 'Traceback' not in proc.stderr
  assert not (tmp_path / 'w').exists()  # stopped before anything was made
  debug = subprocess.run(
    [*cmd, '--debug'], cwd=REPO, capture_output=True, text=True
  )
  assert debug.returncode != 0 and 'Traceback' in debug.stderr


def test_lr_drops_after_the_end_are_allowed_but_said(caplog):
  config = cifar()
  config.num_epochs = config.stage2_epoch = 2
  with caplog.at_level('WARNING'):
    config_lib.check_config(config)
  assert (
    'never apply' in caplog.text and 'epochs=E,meta_epochs=M' in caplog.text
  )


@pytest.mark.parametrize(
  'flags, message',
  [
    (['--config=configs/cifar10_lt.py:method=our_ce'],
     "ltjax: error: unknown method 'our_ce' (config.method); choose one of"),
    (['--config=configs/cifar10lt.py'],
     'ltjax: error: no config file configs/cifar10lt.py; configs has '),
    (['--config=configs/cifar10_lt.py', '--config.lerning_rate=0.1'],
     "ltjax: error: config field 'lerning_rate' does not exist. Did you mean "
     '"learning_rate" instead of "lerning_rate"?'),
  ],
)  # fmt: skip
def test_config_typos_are_one_line_with_exit_2(flags, message, tmp_path):
  cmd = [sys.executable, '-m', 'ltjax.main', f'--workdir={tmp_path / "w"}']
  proc = subprocess.run(cmd + flags, cwd=REPO, capture_output=True, text=True)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [ln for ln in proc.stderr.splitlines() if ln[:1] not in 'IW']
  assert lines[0].startswith(message), lines
  assert lines[1:] == ['(--debug shows the traceback)']
  assert not (tmp_path / 'w').exists()


def test_help_exits_0_with_the_methods_and_print_config_lists_fields():
  cmd = [sys.executable, '-m', 'ltjax.main']
  proc = subprocess.run(
    cmd + ['--help'], cwd=REPO, capture_output=True, text=True
  )
  assert proc.returncode == 0
  assert 'Methods: ' + ', '.join(methods.METHODS) in proc.stdout
  assert '--config.data.dir=../shared/data' in proc.stdout  # runs offline
  proc = subprocess.run(
    cmd + ['--config=configs/cifar10_lt.py:method=crt', '--print_config'],
    cwd=REPO, capture_output=True, text=True,
  )  # fmt: skip
  assert proc.returncode == 0
  assert 'method: crt' in proc.stdout and 'classifier_lr: 0.04' in proc.stdout
