"""The machine a benchmark ran on, for the tables it prints, and its memory."""

import ctypes
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


def _status_kib(key: str) -> int:
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith(key + ':'):
        return int(line.split()[1])
  raise KeyError(key)


def rss_peak_rise(fn, times: int) -> int:
  """Bytes by which ``times`` calls of ``fn`` raise this process's resident
  high-water mark (Linux: ``VmHWM`` reset through ``/proc/self/clear_refs``,
  after giving freed heap back with ``malloc_trim``)."""
  ctypes.CDLL('libc.so.6').malloc_trim(0)
  with open('/proc/self/clear_refs', 'w') as f:
    f.write('5')  # reset VmHWM to the current resident set
  before = _status_kib('VmRSS')
  for _ in range(times):
    fn()
  return (_status_kib('VmHWM') - before) * 1024
