"""Defaults shared by the ``configs/`` files, and their variant strings.

A config file's ``get_config(arg)`` takes big_vision-style variants,
``--config=configs/cifar10_lt.py:method=ours_ce,imb=100``; every field can
also be overridden on the command line (``--config.batch_size=128``).
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections

from ltjax import config_check, methods
from ltjax.data.specs import SPECS

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
      raise ValueError(
        f'bad config variant {item!r}: use key=value with key in '
        f'{sorted(defaults)}.'
      )
    kind = type(defaults[key])
    try:
      out[key] = kind(value)
    except ValueError:
      raise ValueError(
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
  """Every field of a run: the benchmark's schedule (the arguments, which a
  config file spells out), :func:`method_defaults`, and the defaults of
  data, logging and checkpointing."""
  c = ml_collections.ConfigDict()
  c.dataset = dataset
  c.method = method
  c.model = model
  c.num_classes = 10  # only read for dataset 'npz'
  c.seed = 0
  c.num_seeds = 1  # > 1: that many independent runs in one vmapped step
  c.compute_dtype = 'float32'  # or 'bfloat16' (parameters stay float32)
  # A torchvision ResNet state_dict (.pth) to start from; '' trains from
  # scratch (ltjax.models.torch_import).
  c.init_from = ''

  c.batch_size = batch_size
  c.dev_batch_size = batch_size
  c.eval_batch_size = 500
  c.num_epochs = num_epochs
  c.stage2_epoch = stage2_epoch  # t1 = [0, stage2_epoch), t2 = the rest
  c.learning_rate = learning_rate
  c.lr_boundaries = lr_boundaries
  c.lr_decay = lr_decay
  c.momentum = 0.9
  c.nesterov = True
  c.weight_decay = weight_decay
  for field, value in method_defaults(method).items():
    c[field] = value

  c.eval_every_epochs = 10
  c.log_every_steps = 50
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3

  c.data = ml_collections.ConfigDict()
  c.data.imbalance = 100.0  # 0 keeps the training set as it is
  c.data.profile = 'exp'
  c.data.n_max = 0.0  # 0: the official (N - dev C) / C
  # The paper's dev size of the dataset (SPECS); 10 per class for npz files.
  spec = SPECS.get(dataset)
  c.data.dev_per_class = spec.dev_per_class if spec else 10
  c.data.test_per_class = 0  # > 0: carve a test set when there is none
  c.data.split_seed = 0
  c.data.tfds_data_dir = ''  # '' : tfds's default (~/tensorflow_datasets)
  c.data.download = False  # True: let tfds download an unprepared dataset
  # Cache of the tfds labels and file names (read once from every record):
  # '' : $LTJAX_CACHE_DIR, else ~/.cache/ltjax; 'off': none.
  c.data.cache_dir = ''
  c.data.dir = ''  # folder of the npz files (dataset 'npz')
  c.data.name = ''  # in titles and results; '' : the benchmark's name
  c.data.train_file = ''
  c.data.test_file = ''
  c.data.dev_file = ''
  c.data.dev_source = 'validation'  # ImageNet-LT: 'validation' or 'carve'
  c.data.places_lt_dir = ''  # Places-LT: folder of Places_LT_*.txt
  c.image_size = 224  # crops of the large datasets' host pipeline
  return c


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
    raise ValueError(
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
