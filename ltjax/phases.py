"""How long each phase of a run's start takes, logged as it ends.

A large dataset's start reads labels, builds the split and the pipeline and
compiles the step before the first update; :func:`phase` times each, so a
user sees where the minutes go (and a benchmark reads the same figures).
"""

from __future__ import annotations

import contextlib
import time

from absl import logging


@contextlib.contextmanager
def phase(name: str, durations: dict | None = None):
  """Times the ``with`` block: logs ``name`` and its seconds, and stores
  them in ``durations[name]`` when given."""
  start = time.perf_counter()
  yield
  seconds = time.perf_counter() - start
  logging.info('Start: %s took %.2f s.', name, seconds)
  if durations is not None:
    durations[name] = seconds
