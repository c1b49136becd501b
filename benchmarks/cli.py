"""Flags and progress lines shared by the benchmarks' command lines."""

from __future__ import annotations

import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR_CONFIG = os.path.join(REPO, 'configs', 'cifar10_lt.py')


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


def log(text: str) -> None:
  """A progress line, on stderr (stdout carries the report)."""
  print(text, file=sys.stderr, flush=True)


def progress_due(every: int, done: int, total: int) -> bool:
  """Whether step ``done`` of ``total`` gets a line (every ``every``; 0: none)."""
  return bool(every) and (done % every == 0 or done == total)


def progress(label, done, total, images, start) -> None:
  rate = images / (time.perf_counter() - start)
  log(f'  {label}: step {done}/{total}, {rate:.1f} images/s')


def report(lines: list[str], nonfinite=()) -> str:
  """Prints and returns a benchmark's report, warning of non-finite losses."""
  if nonfinite:
    lines = [
      *lines,
      f'\nWarning: non-finite loss in {list(nonfinite)}; timings may mislead.',
    ]
  text = '\n'.join(lines)
  print(text)
  return text
