"""One validation pass over every config field, before any data is read.

:data:`RULES` names, for every field a run reads (stage 2's included, so a
bad ``eps_grad`` stops at start, not at epoch 160), its type and what is
allowed; :func:`check` applies them and then the rules that tie fields
together (lr drops after the last epoch are allowed, with a warning). Every message names the field, the value and what is allowed.
"""

from __future__ import annotations

import os

import jax
from absl import logging

from ltjax import datasets, fields, methods, models
from ltjax.data.specs import DEV_SOURCES


class ConfigError(ValueError):
  """A config value that no run can use; the message says the fix."""


# The rules of ltjax.fields, under the short names of the table below.
_choice, _at_least, _in, _ANY = (
  fields.choice,
  fields.at_least,
  fields.in_range,
  fields.ANY,
)
_INT, _NUM, _STR, _BOOL = fields.INT, fields.NUM, fields.STR, fields.BOOL
_has_type = fields.has_type

# field: (type, (predicate, what is allowed)).
RULES = {
  'dataset': (
    _STR,
    _choice([*datasets.ARRAY_DATASETS, *datasets.LARGE_DATASETS]),
  ),
  'method': (_STR, _choice(methods.METHODS)),
  'model': (_STR, _choice(models.MODELS)),
  'num_classes': (_INT, _at_least(2)),
  'seed': (_INT, _ANY),
  'num_seeds': (_INT, _at_least(1)),
  'compute_dtype': (_STR, _choice(models.COMPUTE_DTYPES)),
  'batch_size': (_INT, _at_least(1)),
  'dev_batch_size': (_INT, _at_least(1)),
  'eval_batch_size': (_INT, _at_least(1)),
  'num_epochs': (_INT, _at_least(1)),
  'stage2_epoch': (_INT, _at_least(0)),
  'learning_rate': (_NUM, _at_least(0, strict=True)),
  'lr_decay': (_NUM, ((lambda v: 0 < v <= 1), 'in (0, 1]')),
  'warmup_epochs': (_INT, _at_least(0)),
  'momentum': (_NUM, _in(0, 1)),
  'nesterov': (_BOOL, _ANY),
  'weight_decay': (_NUM, _at_least(0)),
  # The hyperparameters of the loss and stage tables, with their own rules.
  **{n: (f.kind, f.rule) for n, f in methods.hyperparameters().items()},
  'eval_every_epochs': (_INT, _at_least(1)),
  'log_every_steps': (_INT, _at_least(1)),
  'checkpoint_every_steps': (_INT, _at_least(1)),
  'keep_checkpoints': (_INT, _at_least(1)),
  'image_size': (_INT, _at_least(1)),
  'data.imbalance': (
    _NUM,
    ((lambda v: v == 0 or v >= 1), '0 (keep the data as it is) or >= 1'),
  ),
  'data.profile': (_STR, _choice(('exp', 'step'))),
  'data.n_max': (_NUM, _at_least(0)),
  'data.dev_per_class': (_INT, _at_least(0)),
  'data.test_per_class': (_INT, _at_least(0)),
  'data.split_seed': (_INT, _ANY),
  'data.download': (_BOOL, _ANY),
  'data.dev_source': (_STR, _choice(DEV_SOURCES)),
  **{
    f'data.{f}': (_STR, _ANY)
    for f in (
      'tfds_data_dir',
      'dir',
      'train_file',
      'test_file',
      'dev_file',
      'places_lt_dir',
      'name',
    )
  },  # fmt: skip
}


def _get(config, field):
  node = config
  for part in field.split('.'):
    node = node[part]
  return node


def _fail(field, value, allowed):
  raise ConfigError(
    f'config.{field}={value!r} is not allowed: use {allowed} '
    f'(--config.{field}=...).'
  )


def check(config) -> None:
  """Raises :class:`ConfigError` for the first bad field or combination."""
  # The names first, with the registries' own messages (they list choices).
  datasets.check_dataset_name(config.dataset)
  methods.get_method(config.method)
  models.registry.check_model(config.model)
  imbalance = config.data.imbalance
  if _has_type(imbalance, _NUM) and 0 < imbalance < 1:
    raise ConfigError(
      f'config.data.imbalance must be >= 1 (or 0 to keep the data as it is), '
      f'got {imbalance}.'
    )
  for field, (kind, (ok, allowed)) in RULES.items():
    try:
      value = _get(config, field)
    except (KeyError, AttributeError):
      raise ConfigError(
        f'config.{field} is missing; start from a file in configs/.'
      ) from None
    if not _has_type(value, kind):
      _fail(field, value, f'a finite {kind}, {allowed}')
    if not ok(value):
      _fail(field, value, allowed)
  _check_schedule(config)
  _check_devices(config)
  _check_init_from(config)


def _check_schedule(config) -> None:
  n = config.num_epochs
  if config.stage2_epoch > n:
    _fail('stage2_epoch', config.stage2_epoch, f'in [0, num_epochs={n}]')
  bounds = list(config.lr_boundaries)
  if not all(_has_type(b, _INT) and b >= 0 for b in bounds):
    _fail('lr_boundaries', config.lr_boundaries, 'epochs >= 0')
  late = [b for b in bounds if b > n]
  if late:
    # Allowed, so that --config.num_epochs alone shortens a run, but said.
    logging.warning(
      'config.lr_boundaries %s: the drops at epochs %s lie after the last '
      'epoch (num_epochs=%d) and never apply; a shortened schedule with its '
      'drops is the variant epochs=E,meta_epochs=M.',
      tuple(bounds), late, n,
    )  # fmt: skip
  if bounds != sorted(bounds):
    _fail('lr_boundaries', config.lr_boundaries, 'epochs in increasing order')
  if config.warmup_epochs > n:
    _fail('warmup_epochs', config.warmup_epochs, f'<= num_epochs={n}')
  if config.num_seeds > 1 and config.dataset in datasets.LARGE_DATASETS:
    _fail(
      'num_seeds',
      config.num_seeds,
      f'1 for {config.dataset} (vectorized seeds need an array dataset kept '
      'on the device: CIFAR or npz)',
    )


def _check_devices(config) -> None:
  n = jax.device_count()
  for field in ('batch_size', 'dev_batch_size', 'eval_batch_size'):
    if config[field] % n:
      raise ConfigError(
        f'config.{field}={config[field]} does not divide evenly over {n} '
        f'devices; use a multiple of {n}.'
      )


def _check_init_from(config) -> None:
  path = config.get('init_from', '')
  if path is None:
    raise ConfigError(
      'config.init_from is required by this config (its protocol fine-tunes '
      'ImageNet-pretrained weights; the config file says where to get them): '
      "pass --config.init_from=PATH.pth, or --config.init_from='' to train "
      'from scratch.'
    )
  if not isinstance(path, str):
    _fail('init_from', path, "a path to a .pth file, or '' (from scratch)")
  if not path:
    return
  if config.model not in models.registry.TORCHVISION_LAYOUT:
    raise ConfigError(
      f'config.init_from loads torchvision ResNet weights, which fit '
      f'config.model {models.registry.TORCHVISION_LAYOUT}, not '
      f"{config.model!r}; set config.model or config.init_from=''."
    )
  if not os.path.isfile(path):
    raise ConfigError(
      f'config.init_from: no file {path}. Give the path of a torchvision '
      f"ResNet state_dict (.pth), or '' to train from scratch."
    )
