"""Shared test configuration: where the offline real data lives."""

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


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
