"""Shared test configuration: where the offline real data lives."""

import atexit
import os
import pathlib
import shutil
import sys
import tempfile

import pytest

# One persistent XLA compilation cache for the session, this process and
# every subprocess a test starts (they inherit the environment): the suite
# compiles the same small programs in many tests and CLI runs, and each is
# compiled once. The cache starts empty, so every program is still compiled
# in the session; executables are looked up by their HLO, so a hit runs the
# very program a compilation would give.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix='ltjax_tests_xla_cache_')
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _CACHE
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'
  if 'jax' in sys.modules:  # imported already: its config read the env
    _jax = sys.modules['jax']
    _jax.config.update('jax_compilation_cache_dir', _CACHE)
    _jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
    _jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope='session')
def _label_cache_in_tmp(tmp_path_factory):
  """Caches of tfds columns (ltjax.data.tfds_sources) go to a temporary
  folder, not the user's ~/.cache; subprocesses inherit it."""
  old = os.environ.get('LTJAX_CACHE_DIR')
  os.environ['LTJAX_CACHE_DIR'] = str(tmp_path_factory.mktemp('ltjax_cache'))
  yield
  if old is None:
    del os.environ['LTJAX_CACHE_DIR']
  else:
    os.environ['LTJAX_CACHE_DIR'] = old


def pytest_addoption(parser):
  parser.addoption(
    '--data-dir',
    default=os.environ.get('LTJAX_DATA_DIR', str(REPO.parent / 'shared/data')),
    help='Folder with cifar10_prefix_train.npz (env LTJAX_DATA_DIR; default '
    'the shared/data folder beside the checkout).',
  )


@pytest.fixture(scope='session')
def cifar_prefix_npz(request):
  path = pathlib.Path(request.config.getoption('--data-dir'))
  path = path / 'cifar10_prefix_train.npz'
  if not path.exists():
    message = f'{path} not found: pass --data-dir or set LTJAX_DATA_DIR.'
    if os.environ.get('CI', '').lower() in ('true', '1'):
      pytest.fail(f'{message} In CI (CI=true) the real images must be there.')
    pytest.skip(message)
  return path
