"""Doctest collection: skip modules whose optional imports are missing.

``pytest`` collects doctests from ``ltjax/``; where TensorFlow (the tf.data
pipeline) or ml-collections (the CLI and configs) are not installed, as on a
bare accelerator machine, those modules are left out instead of failing.
"""

import importlib.util

collect_ignore_glob = []
if importlib.util.find_spec('tensorflow') is None:
  collect_ignore_glob += [
    'ltjax/data/tf_pipeline.py',
    'ltjax/data/tfds_sources.py',
  ]
if importlib.util.find_spec('ml_collections') is None:
  collect_ignore_glob += ['ltjax/main.py', 'ltjax/config_lib.py']
