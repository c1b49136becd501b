"""Shared test configuration: where the offline real data lives."""

import os
import pathlib

import pytest

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
