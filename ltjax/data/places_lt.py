"""Places-LT over tfds ``places365_small``: the list files and a filtered copy.

Places-LT (Liu et al., CVPR 2019) names its images by Places365 file name in
``Places_LT_{train,val,test}.txt`` (lines ``path label``). Its train and
val lists pick 62,500 + 7,300 of Places365's 1.8 million training images,
so :class:`ltjax.data.tfds_sources.TfdsSource` reads them, after the first
use, from a copy of just those records in its cache.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from ltjax.errors import ConfigError, DataError, MissingFileError

PLACES_LT_LISTS = {
  'train': 'Places_LT_train.txt',
  'val': 'Places_LT_val.txt',
  'test': 'Places_LT_test.txt',
}
HELP = (
  'The Places-LT split lists Places_LT_train.txt, Places_LT_val.txt and '
  'Places_LT_test.txt (lines "data_256/a/airfield/00000001.jpg 0") come with '
  'the OLTR release of Liu et al., CVPR 2019 '
  '(github.com/zhmiao/OpenLongTailRecognition-OLTR, folder Places_LT_v2 of '
  'its data download); pass the folder that holds them as places_lt_dir.'
)


def check_lists(places_lt_dir) -> dict:
  """``{split: path}`` of the three list files in ``places_lt_dir``."""
  if places_lt_dir is None:
    raise ConfigError(f'places_lt needs places_lt_dir. {HELP}')
  paths = {
    split: os.path.join(os.fspath(places_lt_dir), fname)
    for split, fname in PLACES_LT_LISTS.items()
  }
  missing = [p for p in paths.values() if not os.path.isfile(p)]
  if missing:
    raise MissingFileError(f'missing {missing}. {HELP}')
  return paths


def lists_digest(paths: dict) -> str:
  """A short sha256 of the three list files' contents."""
  digest = hashlib.sha256()
  for split in sorted(paths):
    with open(paths[split], 'rb') as f:
      digest.update(f.read())
  return digest.hexdigest()[:12]


def match_list(list_path, names, tfds_split):
  """``(records, labels)`` of the list file ``list_path`` (lines ``path
  label``): the record numbers of its images among ``names`` (the tfds
  split's file names, in record order), sorted, with their labels."""
  where = {n: i for i, n in enumerate(names)}
  paths, labels = [], []
  with open(list_path) as f:
    for line in f:
      if line.strip():
        path, label = line.split()
        paths.append(path.lstrip('/'))
        labels.append(int(label))
  missing = [p for p in paths if p not in where]
  if missing:
    raise DataError(
      f'{len(missing)} of {len(paths)} images of {list_path} are '
      f'not in tfds places365_small/{tfds_split} (first: '
      f'{missing[:3]}; tfds names look like {names[:2]}).'
    )
  records = np.array([where[p] for p in paths], np.int64)
  if len(np.unique(records)) != len(records):
    raise DataError(f'{list_path} lists an image twice.')
  order = np.argsort(records)
  return records[order], np.asarray(labels, np.int32)[order]
