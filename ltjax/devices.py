"""Where a run computes: its processes, its devices and their mesh.

:func:`join_processes` joins a run of several processes
(``jax.distributed``), :func:`make_mesh` lays every device of every process
on the one ``'data'`` axis the trainer shards batches over, and
:func:`log_platform` says at start which backend JAX uses.
"""

from __future__ import annotations

import os

import jax
from absl import logging
from jax.experimental import multihost_utils


def join_processes(
  coordinator_address=None, num_processes=None, process_id=None
):
  """Joins this process to a run of several (``jax.distributed.initialize``).

  Without arguments ``jax.distributed`` reads them from the cluster's
  environment (SLURM's ``SLURM_*`` variables, Open MPI's, ...). Then one
  collective while the processes are still together: on CPU, gloo sets up
  its context at the first collective and waits only 30 s there for the
  others, which uneven start-up work (reading a dataset's labels) can
  exceed.
  """
  jax.distributed.initialize(coordinator_address, num_processes, process_id)
  multihost_utils.sync_global_devices('ltjax_processes_joined')
  logging.info(
    'Process %d of %d joined: %d devices in all, %d here.',
    jax.process_index(),
    jax.process_count(),
    jax.device_count(),
    jax.local_device_count(),
  )


def make_mesh() -> jax.sharding.Mesh:
  """A 1-D ``'data'`` mesh over every device of every process."""
  return jax.make_mesh(
    (jax.device_count(),), ('data',), axis_types=(jax.sharding.AxisType.Auto,)
  )


def log_platform() -> None:
  """Logs where JAX computes; warns when a GPU is visible but unused."""
  platform = jax.default_backend()
  logging.info(
    'JAX %s on %s: %d device(s) in %d process(es): %s',
    jax.__version__, platform, jax.device_count(), jax.process_count(),
    jax.devices()[0].device_kind,
  )  # fmt: skip
  if platform == 'cpu' and os.path.exists('/dev/nvidia0'):
    logging.warning(
      'An NVIDIA GPU is visible (/dev/nvidia0) but JAX runs on the CPU: '
      'install the CUDA build with pip install -e ".[cuda]" (README, '
      '"The two commands").'
    )
