"""Smoke test of benchmarks/epoch.py on a tiny model: it runs and prints.

Two steps of each stage and implementation on a small synthetic split; no
timing is asserted (the numbers depend on the machine).
"""

import numpy as np
import pytest

pytest.importorskip('torch', reason='the benchmark compares with PyTorch')
pytest.importorskip('PIL', reason='the PyTorch side augments PIL images')

from benchmarks import epoch, torch_data  # noqa: E402
from tests.tables import EVERY_ROW, rows  # noqa: E402

TINY = [
  '--model=tiny', '--steps=2', '--batch_size=4', '--dev_batch_size=4',
  '--pool_per_class=120', '--image_size=8', '--pause=0', '--log_every=1',
]  # fmt: skip


def test_table_has_every_stage_and_implementation(capsys):
  text = epoch.main(TINY)
  out, err = capsys.readouterr()
  assert text in out
  assert '| stage | implementation | steps | images | first step s |' in text
  table = rows(text)
  assert [r[:2] for r in table] == EVERY_ROW
  for r in table:
    assert int(r[2]) == 2 and int(r[3]) == 8  # steps, images
    first, wall, rate = float(r[4]), float(r[6]), float(r[7])
    assert first > 0 and wall > 0 and rate > 0
    assert float(r[8].rstrip('x')) > 0  # speed vs PyTorch
  assert float(table[0][5]) > 0 and table[1][5] == '–'  # compile s
  assert '100 dev' in text  # the balanced dev set, carved first
  assert 'Warning' not in text  # finite losses, no compilation while timed
  assert 'torch meta: step 2/2' in err  # progress on stderr


def test_torch_transform_matches_ltjax_augmentation():
  """The hand-written PIL transform is the official crop/flip/normalize."""
  import torch
  from PIL import Image

  from ltjax.data import augment

  image = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), np.uint8)
  torch.manual_seed(0)
  got = torch_data.official_transform(Image.fromarray(image[0]), 32).numpy()
  torch.manual_seed(0)  # the same draws: crop row, crop column, flip
  i, j = (torch.randint(0, 9, (1,)).item() for _ in range(2))
  flip = bool(torch.rand(1) < 0.5)
  want = augment.augment_numpy(image, [(i, j)], [flip])[0].transpose(2, 0, 1)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_workers_flag_and_selection():
  text = epoch.main([*TINY, '--stages=ce', '--impls=torch', '--workers=0'])
  (row,) = rows(text)
  assert row[:2] == ['ce', 'torch'] and row[8] == '1.00x'
  assert 'DataLoader workers 0' in text


def test_bad_flags():
  with pytest.raises(SystemExit):
    epoch.parse_args(['--stages=ce,backward'])
