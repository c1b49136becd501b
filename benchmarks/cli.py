"""Flags shared by the benchmarks' command lines."""

from __future__ import annotations

import argparse


def parser(doc: str):
  """``(parser, add)``: ``add('batch_size', ...)`` takes ``--batch_size``
  and ``--batch-size``."""
  p = argparse.ArgumentParser(description=doc.splitlines()[0])

  def add(name, **kwargs):
    p.add_argument(f'--{name}', f'--{name.replace("_", "-")}', **kwargs)

  return p, add


def csv(choices):
  """An argparse type: a comma-separated, non-empty list of ``choices``."""

  def parse(text):
    items = [s for s in text.split(',') if s]
    bad = [s for s in items if s not in choices]
    if bad or not items:
      raise argparse.ArgumentTypeError(f'choose from {choices}, got {text}')
    return items

  return parse


def add_torch_device(add) -> None:
  add(
    'torch_device',
    choices=('auto', 'cpu', 'cuda'),
    default='auto',
    help="PyTorch's device; auto: cuda where JAX runs on a GPU, else cpu",
  )
