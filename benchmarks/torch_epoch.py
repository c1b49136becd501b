"""CIFAR-LT epochs of the official PyTorch loop, for ``benchmarks/epoch.py``.

As the official code (``C-LT/main.py``, github.com/abdullahjamal/Longtail_DA):
a ``DataLoader(shuffle=True)`` over :class:`benchmarks.torch_data.ArrayDataset`
(the official PIL transform), one ``optimizer.step()`` per CE batch, and per
meta batch ``next(iter(dev_loader))`` (a fresh dev iterator, and its worker
processes, each step) then ``official_meta_step`` of
:mod:`benchmarks.torch_reference`.
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np
import torch
from torch.utils.data import DataLoader

from benchmarks import cli, machine, torch_reference
from benchmarks.torch_data import ArrayDataset
from ltjax import weighting


def torch_step(stage, net, opt, x, y, dev_loader, w, lr, device) -> float:
  """One official step: CE, or ``train_meta`` with a fresh dev iterator."""
  x, y = x.to(device), y.to(device)
  if stage == 'ce':
    loss = torch_reference.official_ce_step(net, opt, x, y)
  else:
    xd, yd = next(iter(dev_loader))  # as the official train_meta
    xd, yd = xd.to(device), yd.to(device)
    loss = torch_reference.official_meta_step(
      net, opt, x, y, xd, yd, w, inner_lr=lr
    )['train_loss']
  return loss.item()


def _loader(split, batch_size, workers):
  return DataLoader(
    ArrayDataset(split.image, split.label),
    batch_size=batch_size,
    shuffle=True,
    num_workers=workers,
  )


def _timed_epoch(args, label, step, make, train_loader) -> dict:
  """One untimed step on a fresh model, then an epoch on another."""
  n = min(args.steps, len(train_loader)) if args.steps else len(train_loader)
  net, opt = make()
  t0 = time.perf_counter()
  step(net, opt, *next(iter(train_loader)))
  first = time.perf_counter() - t0

  net, opt = make()
  time.sleep(args.pause)
  cli.log(f'{label}: {n} steps of {args.batch_size}, {args.workers} workers')
  images = 0
  t0 = time.perf_counter()
  batches = iter(train_loader)
  for i in range(n):
    x, y = next(batches)
    loss = step(net, opt, x, y)
    images += len(y)
    if cli.progress_due(args.log_every, i + 1, n):
      cli.progress(label, i + 1, n, images, t0)
  wall = time.perf_counter() - t0  # at the last step, as for ltjax
  del batches  # stops its workers (prefetching, if the epoch is partial)
  return {
    'steps': n,
    'images': images,
    'wall': wall,
    'first': first,
    'compile': None,
    'recompiles': 0,
    'loss': loss,
    'finite': bool(np.isfinite(loss)),
  }


def torch_epochs(args, config, arrays, lrs, model) -> dict:
  """{stage: result} on ``arrays``, the host split of ``config``.

  ``lrs``: {stage: lr of its first epoch}; ``model``: ``(stage_sizes,
  widths)`` of the CIFAR ResNet.
  """
  torch.set_num_threads(args.threads or os.cpu_count())
  device = machine.torch_device(args.torch_device)
  # Workers run only PIL and torch code, never JAX: its fork warning is moot.
  warnings.filterwarnings('ignore', message=r'os\.fork\(\) was called')
  train_loader = _loader(arrays.train, args.batch_size, args.workers)
  dev_loader = _loader(arrays.dev, args.dev_batch_size, args.workers)
  w = weighting.class_balanced_weights(arrays.class_counts, config.cb_beta)
  w = torch.as_tensor(np.asarray(w, np.float32), device=device)
  out = {}
  for stage in args.stages:
    lr = lrs[stage]

    def make(lr=lr):
      torch.manual_seed(config.seed)
      net = torch_reference.CifarResNet(*model, arrays.num_classes).to(device)
      return net, torch_reference.make_sgd(net, lr)

    def step(net, opt, x, y, stage=stage, lr=lr):
      return torch_step(stage, net, opt, x, y, dev_loader, w, lr, device)

    out[stage] = _timed_epoch(args, f'torch {stage}', step, make, train_loader)
  return out
