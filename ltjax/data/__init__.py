"""Long-tailed datasets: subsampling, sources and input pipelines.

TensorFlow is imported only by ``ltjax.data.tfds_sources`` and
``ltjax.data.tf_pipeline``; nothing here imports them, so ``import ltjax``
works where TensorFlow is not installed.
"""

from ltjax.data import augment as augment
from ltjax.data import device_pipeline as device_pipeline
from ltjax.data.arrays import ArrayData as ArrayData
from ltjax.data.arrays import balanced_holdout as balanced_holdout
from ltjax.data.arrays import from_arrays as from_arrays
from ltjax.data.arrays import load_npz as load_npz
from ltjax.data.longtail import LongTailSplit as LongTailSplit
from ltjax.data.longtail import exponential_profile as exponential_profile
from ltjax.data.longtail import largest_imbalance as largest_imbalance
from ltjax.data.longtail import long_tail_split as long_tail_split
from ltjax.data.longtail import shot_groups as shot_groups
from ltjax.data.longtail import step_profile as step_profile
