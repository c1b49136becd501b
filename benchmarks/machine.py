"""The machine a benchmark ran on, for the tables it prints."""

import platform


def cpu_model() -> str:
  """The CPU's model name (from /proc/cpuinfo where there is one)."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def accelerator() -> str:
  """JAX's first device, e.g. 'NVIDIA H100 80GB HBM3'; '' on CPU."""
  import jax

  device = jax.devices()[0]
  return '' if device.platform == 'cpu' else device.device_kind


def torch_device(name: str) -> str:
  """'cpu' or 'cuda' for ``--torch_device``; 'auto': where JAX computes."""
  import torch

  if name == 'auto':
    return 'cuda' if accelerator() and torch.cuda.is_available() else 'cpu'
  if name == 'cuda' and not torch.cuda.is_available():
    raise SystemExit('--torch_device=cuda, but torch sees no CUDA device.')
  return name


def header(torch_module=None) -> str:
  """'<date> UTC; <CPU>, <n> CPUs; [GPU <name>; ]<OS>; jax <v> (<backend>)'.

  With ``torch_module`` (the imported module), its version is added.
  """
  import datetime
  import os

  import jax

  gpu = accelerator()
  torch = f', torch {torch_module.__version__}' if torch_module else ''
  return (
    f'{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; '
    f'{cpu_model()}, {os.cpu_count()} CPUs; '
    + (f'GPU {gpu}; ' if gpu else '')
    + f'{platform.system()}; jax {jax.__version__} ({jax.default_backend()})'
    + torch
  )
