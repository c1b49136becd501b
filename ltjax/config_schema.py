"""Every config field, once: its default, type and the values it allows.

:data:`SCHEMA` maps each field a run reads (``'data.imbalance'`` for a field
of ``config.data``) to a :class:`ltjax.fields.Field`.
:func:`ltjax.config_lib.base_config` builds a config from it, and
:func:`ltjax.config_check.check` validates a config by walking it; the rules
that tie several fields together stay in :mod:`ltjax.config_check`.

The benchmark's schedule has no default (:data:`ltjax.fields.UNSET`): a
config file spells it out as the arguments of ``base_config``, which also
sets the fields that follow from them (``dev_batch_size`` and
``reference_batch_size`` from ``batch_size``, ``warmup_epochs`` from the
method's loss, ``data.dev_per_class`` from the dataset).
"""

from __future__ import annotations

from ltjax import methods, models
from ltjax.data.longtail import PROFILES
from ltjax.data.specs import DATASETS, DEV_SOURCES
from ltjax.fields import (
  BOOL,
  INT,
  INTS,
  NUM,
  STR,
  UNSET,
  Field,
  at_least,
  choice,
  in_range,
)

_AT_LEAST_1 = at_least(1)
_AT_LEAST_0 = at_least(0)


def _str(doc: str = '') -> Field:
  return Field('', STR, doc=doc)


SCHEMA: dict[str, Field] = {
  'dataset': Field(UNSET, STR, choice(DATASETS)),
  'method': Field(UNSET, STR, choice(methods.METHODS)),
  'model': Field(UNSET, STR, choice(models.MODELS)),
  'num_classes': Field(10, INT, at_least(2), doc="read for dataset 'npz' only"),
  'seed': Field(0, INT),
  'num_seeds': Field(
    1,
    INT,
    _AT_LEAST_1,
    doc='> 1: that many runs in one vmapped step (seed s: config.seed + s)',
  ),
  'compute_dtype': Field(
    'float32',
    STR,
    choice(models.COMPUTE_DTYPES),
    doc="'bfloat16' computes in bfloat16 (parameters stay float32)",
  ),
  'init_from': _str(
    "a torchvision ResNet state_dict (.pth) to start from; '' trains from "
    'scratch (ltjax.models.torch_import)'
  ),
  'batch_size': Field(UNSET, INT, _AT_LEAST_1),
  'dev_batch_size': Field(
    UNSET, INT, _AT_LEAST_1, doc='the dev batch of the meta stages'
  ),
  'eval_batch_size': Field(500, INT, _AT_LEAST_1),
  'num_epochs': Field(UNSET, INT, _AT_LEAST_1),
  'stage2_epoch': Field(
    UNSET, INT, _AT_LEAST_0, doc='t1 = [0, stage2_epoch), t2 = the rest'
  ),
  'learning_rate': Field(
    UNSET,
    NUM,
    at_least(0, strict=True),
    doc='the base rate at reference_batch_size',
  ),
  'scale_lr_with_batch': Field(
    True,
    BOOL,
    source='Goyal et al., "Accurate, Large Minibatch SGD", 2017',
    doc='the base rate is learning_rate * batch_size / reference_batch_size '
    '(ltjax.config_lib.effective_learning_rate); False: learning_rate at any '
    'batch size',
  ),
  'reference_batch_size': Field(
    UNSET,
    INT,
    _AT_LEAST_1,
    doc="the batch size learning_rate is set for: the config's own "
    'batch_size (base_config sets it)',
  ),
  'lr_boundaries': Field(
    UNSET,
    INTS,
    (
      lambda v: all(b >= 0 for b in v) and list(v) == sorted(v),
      'epochs >= 0 in increasing order',
    ),
    doc='epochs where the rate is multiplied by lr_decay',
  ),
  'lr_decay': Field(UNSET, NUM, ((lambda v: 0 < v <= 1), 'in (0, 1]')),
  'momentum': Field(0.9, NUM, in_range(0, 1)),
  'nesterov': Field(True, BOOL),
  'weight_decay': Field(UNSET, NUM, _AT_LEAST_0),
  # The hyperparameters of the loss and stage tables, with their own rules.
  **methods.hyperparameters(),
  'warmup_epochs': Field(
    UNSET, INT, _AT_LEAST_0, doc="the linear warm-up the method's loss implies"
  ),
  'eval_every_epochs': Field(10, INT, _AT_LEAST_1),
  'log_every_steps': Field(50, INT, _AT_LEAST_1),
  'checkpoint_every_steps': Field(1000, INT, _AT_LEAST_1),
  'keep_checkpoints': Field(3, INT, _AT_LEAST_1),
  'data.imbalance': Field(
    100.0,
    NUM,
    ((lambda v: v == 0 or v >= 1), '0 (keep the data as it is) or >= 1'),
    doc='n_max / n_min of the long-tailed subsample; 0 keeps the training '
    'set as it is',
  ),
  'data.profile': Field('exp', STR, choice(PROFILES)),
  'data.n_max': Field(
    0.0, NUM, _AT_LEAST_0, doc='0: the official (N - dev C) / C'
  ),
  'data.dev_per_class': Field(
    UNSET,
    INT,
    _AT_LEAST_0,
    doc="the paper's dev size of the dataset (SPECS); 10 for npz files",
  ),
  'data.test_per_class': Field(
    0, INT, _AT_LEAST_0, doc='> 0: carve a test set when there is none'
  ),
  'data.split_seed': Field(0, INT),
  'data.tfds_data_dir': _str("'': tfds's default (~/tensorflow_datasets)"),
  'data.download': Field(
    False, BOOL, doc='True: let tfds download an unprepared dataset'
  ),
  'data.cache_dir': _str(
    'cache of the tfds labels and file names (read once from every record); '
    "'': $LTJAX_CACHE_DIR, else ~/.cache/ltjax; 'off': none"
  ),
  'data.dir': _str("folder of the npz files (dataset 'npz')"),
  'data.name': _str("in titles and results; '': the benchmark's name"),
  'data.train_file': _str(),
  'data.test_file': _str(),
  'data.dev_file': _str(),
  'data.dev_source': Field(
    'validation',
    STR,
    choice(DEV_SOURCES),
    doc="ImageNet-LT: 'validation' or 'carve'",
  ),
  'data.places_lt_dir': _str('Places-LT: folder of Places_LT_*.txt'),
  'image_size': Field(
    224, INT, _AT_LEAST_1, doc="crops of the large datasets' host pipeline"
  ),
}
