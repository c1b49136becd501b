"""Defaults shared by the ``configs/`` files, and their variant strings.

A config file's ``get_config(arg)`` takes big_vision-style variants,
``--config=configs/cifar10_lt.py:method=ours_ce,imb=100``; every field can
also be overridden on the command line (``--config.batch_size=128``). The
fields, their defaults and rules are :data:`ltjax.config_schema.SCHEMA`.

The learning rate follows the batch size: ``--config.batch_size=64`` on a
config of batch 128 trains at half its ``learning_rate``
(:func:`effective_learning_rate`; ``--config.scale_lr_with_batch=False``
keeps it).
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections

from ltjax import config_check, methods
from ltjax.config_schema import SCHEMA
from ltjax.data.specs import SPECS
from ltjax.errors import ConfigError

# How results, logs and figures name each dataset.
DATASET_NAMES = {
  'cifar10': 'CIFAR-10-LT',
  'cifar100': 'CIFAR-100-LT',
  'i_naturalist2017': 'iNaturalist 2017',
  'i_naturalist2018': 'iNaturalist 2018',
  'imagenet_lt': 'ImageNet-LT',
  'places_lt': 'Places-LT',
}


def run_title(config) -> str:
  """``'CIFAR-10-LT, imbalance 100 (npz)'``: the dataset (``data.name``, or
  its benchmark name), the imbalance when one is imposed, the source."""
  name = config.data.get('name') or DATASET_NAMES.get(
    config.dataset, config.data.train_file or config.dataset
  )
  imbalance = config.data.imbalance
  source = 'npz' if config.dataset == 'npz' else 'tfds'
  where = f', imbalance {imbalance:g}' if imbalance else ''
  return f'{name}{where} ({source})'


def from_file(path, arg: str | None = None) -> ml_collections.ConfigDict:
  """``get_config(arg)`` of the config file at ``path``, as ``--config``
  loads it (for notebooks, tests and benchmarks)."""
  path = os.fspath(path)
  name = os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(f'ltjax_config_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def parse_arg(arg: str | None, **defaults) -> dict:
  """``'method=ce,imb=100'`` -> ``{'method': 'ce', 'imb': 100.0, ...}``.

  Keys must be among ``defaults``, whose values fill the missing keys and
  give each value its type (``str``, ``int`` or ``float``).
  """
  out = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, sep, value = item.partition('=')
    if not sep or key not in defaults:
      raise ConfigError(
        f'bad config variant {item!r}: use key=value with key in '
        f'{sorted(defaults)}.'
      )
    kind = type(defaults[key])
    try:
      out[key] = kind(value)
    except ValueError:
      raise ConfigError(
        f'bad config variant {item!r}: {key} takes a {kind.__name__}.'
      ) from None
  return out


def method_defaults(method: str) -> dict:
  """The methods' hyperparameters, as the official code and the papers of
  the baselines set them (the same on every benchmark): every field of the
  loss and stage tables (:mod:`ltjax.methods`), and the warm-up that
  ``method``'s loss implies."""
  out = {name: f.default for name, f in methods.hyperparameters().items()}
  out['warmup_epochs'] = methods.LOSSES[
    methods.get_method(method).loss
  ].warmup_epochs
  return out


def base_config(
  dataset: str,
  method: str,
  *,
  model: str,
  batch_size: int,
  num_epochs: int,
  stage2_epoch: int,
  learning_rate: float,
  lr_boundaries: tuple[int, ...],
  lr_decay: float,
  weight_decay: float,
) -> ml_collections.ConfigDict:
  """Every field of :data:`ltjax.config_schema.SCHEMA`: the benchmark's
  schedule (the arguments, which a config file spells out), the fields that
  follow from it, and the defaults of the rest.

  ``batch_size`` is also ``dev_batch_size`` and ``reference_batch_size``,
  the batch that ``learning_rate`` is set for: a run at another batch size
  scales the rate (:func:`effective_learning_rate`).
  """
  spec = SPECS.get(dataset)
  given = {
    'dataset': dataset,
    'method': method,
    'model': model,
    'batch_size': batch_size,
    'dev_batch_size': batch_size,
    'num_epochs': num_epochs,
    'stage2_epoch': stage2_epoch,
    'learning_rate': learning_rate,
    'reference_batch_size': batch_size,
    'lr_boundaries': lr_boundaries,
    'lr_decay': lr_decay,
    'weight_decay': weight_decay,
    'warmup_epochs': method_defaults(method)['warmup_epochs'],
    # The paper's dev size of the dataset; 10 per class for npz files.
    'data.dev_per_class': spec.dev_per_class if spec else 10,
  }
  c = ml_collections.ConfigDict()
  for name, field in SCHEMA.items():
    node = c
    *parents, leaf = name.split('.')
    for part in parents:
      if part not in node:
        node[part] = ml_collections.ConfigDict()
      node = node[part]
    node[leaf] = given[name] if name in given else field.default
  return c


def effective_learning_rate(config) -> float:
  """The base learning rate of ``config``'s schedule, before its drops and
  warm-up: ``learning_rate · batch_size / reference_batch_size`` when
  ``config.scale_lr_with_batch`` (the linear scaling rule of Goyal et al.,
  "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", 2017), else
  ``learning_rate``. At the config's own batch size it is ``learning_rate``
  exactly.

  >>> import types
  >>> c = types.SimpleNamespace(learning_rate=0.1, batch_size=64,
  ...     reference_batch_size=128, scale_lr_with_batch=True)
  >>> effective_learning_rate(c)
  0.05
  """
  lr = config.learning_rate
  if not config.scale_lr_with_batch or (
    config.batch_size == config.reference_batch_size
  ):
    return float(lr)
  return float(lr * config.batch_size / config.reference_batch_size)


def lr_scaling_note(config) -> str:
  """The log line that says how the batch size changed the learning rate
  (``''`` when ``batch_size`` is the config's own):
  ``'lr 0.1 scaled to 0.05 for batch_size 64 (config's 128;
  --config.scale_lr_with_batch=False keeps 0.1)'``."""
  lr, batch = config.learning_rate, config.batch_size
  reference = config.reference_batch_size
  if batch == reference:
    return ''
  if not config.scale_lr_with_batch:
    return (
      f"lr {lr:g} kept for batch_size {batch} (config's {reference}; "
      'scale_lr_with_batch=False)'
    )
  return (
    f'lr {lr:g} scaled to {effective_learning_rate(config):g} for batch_size '
    f"{batch} (config's {reference}; --config.scale_lr_with_batch=False "
    f'keeps {lr:g})'
  )


def large_config(dataset: str, method: str, **schedule):
  """:func:`base_config` with what iNaturalist, ImageNet-LT and Places-LT
  share: streamed 224 x 224 crops, no subsampling (the data is long-tailed
  already), one batch size for training, dev and evaluation."""
  c = base_config(dataset, method, **schedule)
  c.data.imbalance = 0.0
  c.eval_batch_size = c.batch_size
  c.eval_every_epochs = 5
  c.log_every_steps = 100
  c.checkpoint_every_steps = 2000
  return c


def shorten(config, epochs: int, meta_epochs: int) -> None:
  """``epochs`` epochs, the last ``meta_epochs`` of them stage 2.

  The lr drops by ``lr_decay`` once, when stage 2 starts (the official
  schedule's lr in its first meta epoch); the official 200 epochs with 40
  meta epochs keep the config's own schedule.
  """
  if not 0 <= meta_epochs <= epochs or epochs < 1:
    raise ConfigError(
      f'need 0 <= meta_epochs <= epochs and epochs >= 1, got {meta_epochs} '
      f'and {epochs}.'
    )
  config.num_epochs = epochs
  config.stage2_epoch = epochs - meta_epochs
  if (epochs, meta_epochs) != (200, 40):
    config.lr_boundaries = (config.stage2_epoch, epochs)


def check_config(config) -> None:
  """Stops a bad config before any data is read (:mod:`ltjax.config_check`)."""
  config_check.check(config)
