"""The README's runnable example, on the real CIFAR-10 images."""

import re
import subprocess
import sys

from tests.conftest import REPO


def test_meta_resnet_example_runs_on_real_cifar(cifar_prefix_npz):
  result = subprocess.run(
    [
      sys.executable, '-m', 'ltjax.examples.meta_resnet',
      f'--data={cifar_prefix_npz}', '--steps=2', '--batch_size=20',
    ],
    cwd=REPO, capture_output=True, text=True, timeout=600,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-3000:]
  steps = re.findall(
    r'step +(\d+)/2  train loss ([\d.]+)  dev loss ([\d.]+)', result.stdout
  )
  assert [s[0] for s in steps] == ['1', '2'], result.stdout
  assert all(float(loss) > 0 for s in steps for loss in s[1:])
  # 10 CIFAR-10 classes, profile at imbalance 100 from the 5,085 images
  # with the official n_max = (5085 - 10 * 10) / 10 = 498.5.
  assert 'counts [498, 298, 179, 107, 64, 38, 23, 13, 8, 4]' in result.stdout


def test_meta_resnet_example_reports_missing_file(tmp_path):
  result = subprocess.run(
    [
      sys.executable, '-m', 'ltjax.examples.meta_resnet',
      f'--data={tmp_path / "missing.npz"}',
    ],
    cwd=REPO, capture_output=True, text=True, timeout=120,
  )  # fmt: skip
  assert result.returncode != 0
  assert 'no such file' in result.stderr + result.stdout
  assert 'missing.npz' in result.stderr + result.stdout
