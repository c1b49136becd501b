"""Defaults shared by the ``configs/`` files, and their variant strings.

A config file's ``get_config(arg)`` takes big_vision-style variants,
``--config=configs/cifar10_lt.py:method=ours_ce,imb=100``; every field can
also be overridden on the command line (``--config.batch_size=128``).
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections

from ltjax import methods


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
  """``'method=ce,imb=100'`` -> ``{'method': 'ce', 'imb': '100'}``.

  Keys must be among ``defaults``, whose values fill the missing keys.
  """
  out = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, sep, value = item.partition('=')
    if not sep or key not in defaults:
      raise ValueError(
        f'bad config variant {item!r}: use key=value with key in '
        f'{sorted(defaults)}.'
      )
    out[key] = value
  return out


def base_config(dataset: str, method: str) -> ml_collections.ConfigDict:
  """The official CIFAR protocol (REFERENCE.md); large datasets override."""
  methods.get_method(method)
  c = ml_collections.ConfigDict()
  c.dataset = dataset
  c.method = method
  c.model = 'resnet32'
  c.num_classes = 10  # only read for dataset 'npz'
  c.seed = 0
  c.num_seeds = 1  # > 1: that many independent runs in one vmapped step
  c.compute_dtype = 'float32'  # or 'bfloat16' (parameters stay float32)

  c.batch_size = 100
  c.dev_batch_size = 100
  c.eval_batch_size = 500
  c.num_epochs = 200
  c.stage2_epoch = 160  # t1 = [0, 160), t2 = [160, 200)
  c.learning_rate = 0.1
  c.lr_boundaries = (160, 180)
  c.lr_decay = 0.01
  c.warmup_epochs = 0
  c.momentum = 0.9
  c.nesterov = True
  c.weight_decay = 5e-4

  c.cb_beta = 0.9999
  c.focal_gamma = 1.0
  c.ldam_max_margin = 0.5
  c.ldam_scale = 30.0
  c.eps_lr = 0.01
  c.inner_reduction = 'sum'
  c.eps_grad = 'jvp'
  c.mwn_hidden = 100
  c.mwn_lr = 1e-3
  c.mwn_wd = 1e-4
  if methods.get_method(method).loss == 'ldam':
    c.warmup_epochs = 5  # LDAM-DRW's linear warm-up

  c.eval_every_epochs = 10
  c.log_every_steps = 50
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3

  c.data = ml_collections.ConfigDict()
  c.data.imbalance = 100.0  # 0 keeps the training set as it is
  c.data.profile = 'exp'
  c.data.n_max = 0.0  # 0: the official (N - dev C) / C
  c.data.dev_per_class = 10
  c.data.test_per_class = 0  # > 0: carve a test set when there is none
  c.data.split_seed = 0
  c.data.tfds_data_dir = ''  # '' : tfds's default (~/tensorflow_datasets)
  c.data.download = False  # True: let tfds download an unprepared dataset
  c.data.dir = ''  # folder of the npz files (dataset 'npz')
  c.data.train_file = ''
  c.data.test_file = ''
  c.data.dev_file = ''
  c.data.dev_source = 'validation'  # ImageNet-LT: 'validation' or 'carve'
  c.data.places_lt_dir = ''  # Places-LT: folder of Places_LT_*.txt
  c.image_size = 224  # crops of the large datasets' host pipeline
  return c


def large_config(
  dataset: str,
  method: str,
  *,
  model: str,
  dev_per_class: int,
  num_epochs: int,
  stage2_epoch: int,
  learning_rate: float,
  lr_boundaries: tuple[int, ...],
  lr_decay: float = 0.1,
  weight_decay: float = 1e-4,
  batch_size: int = 256,
) -> ml_collections.ConfigDict:
  """Shared settings of iNaturalist, ImageNet-LT and Places-LT: streamed
  224 x 224 crops, no subsampling (the data is long-tailed already)."""
  c = base_config(dataset, method)
  c.model = model
  c.data.imbalance = 0.0
  c.data.dev_per_class = dev_per_class
  c.num_epochs = num_epochs
  c.stage2_epoch = stage2_epoch
  c.learning_rate = learning_rate
  c.lr_boundaries = lr_boundaries
  c.lr_decay = lr_decay
  c.weight_decay = weight_decay
  c.batch_size = c.dev_batch_size = c.eval_batch_size = batch_size
  c.eval_every_epochs = 5
  c.log_every_steps = 100
  c.checkpoint_every_steps = 2000
  return c
