"""Where a result came from: the commit, the package versions, the device."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess

import jax

PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What the reproduction grid (experiments/) rewrites in its checkout as its
# runs finish: a change there is not a change to the code that ran.
OUTPUTS = ('RESULTS.md', 'results')


def git_commit(repo: str = REPO) -> str:
  """``HEAD``'s hash (``-dirty`` with uncommitted changes to tracked files
  other than :data:`OUTPUTS`), or ``'unknown'`` outside a git checkout."""

  def git(*args):
    return subprocess.run(
      ['git', *args], cwd=repo, capture_output=True, text=True, timeout=10
    ).stdout.strip()

  try:
    commit = git('rev-parse', 'HEAD')
    outputs = [f':(top,exclude){path}' for path in OUTPUTS]
    dirty = git('status', '--porcelain', '--untracked-files=no', ':/', *outputs)
  except (OSError, subprocess.SubprocessError):
    return 'unknown'
  return (commit + ('-dirty' if dirty else '')) if commit else 'unknown'


def versions() -> dict:
  out = {'python': platform.python_version()}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


def device() -> str:
  """``'cpu: 1 x cpu'``: the platform, the device count and kind."""
  devices = jax.devices()
  return f'{devices[0].platform}: {len(devices)} x {devices[0].device_kind}'
