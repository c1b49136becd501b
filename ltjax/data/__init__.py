"""Long-tailed datasets: subsampling, sources and input pipelines."""

from ltjax.data.longtail import LongTailSplit as LongTailSplit
from ltjax.data.longtail import exponential_profile as exponential_profile
from ltjax.data.longtail import long_tail_split as long_tail_split
from ltjax.data.longtail import shot_groups as shot_groups
from ltjax.data.longtail import step_profile as step_profile
