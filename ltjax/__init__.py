"""ltjax: long-tailed recognition with class-balanced and meta-learned weights.

A JAX reimplementation of Jamal et al., "Rethinking Class-Balanced Methods for
Long-Tailed Visual Recognition from a Domain Adaptation Perspective" (CVPR
2020).
"""

from ltjax import models as models
from ltjax.errors import ConfigError as ConfigError
from ltjax.errors import DamagedRecordError as DamagedRecordError
from ltjax.errors import DataError as DataError
from ltjax.errors import Error as Error
from ltjax.errors import MissingFileError as MissingFileError
from ltjax.errors import NonFiniteError as NonFiniteError
from ltjax.errors import ResumeConfigError as ResumeConfigError
from ltjax.errors import (
  UnreadableCheckpointError as UnreadableCheckpointError,
)
from ltjax.errors import WorkdirBusyError as WorkdirBusyError
from ltjax.losses import balanced_softmax_loss as balanced_softmax_loss
from ltjax.losses import focal_loss as focal_loss
from ltjax.losses import ldam_loss as ldam_loss
from ltjax.losses import ldam_margins as ldam_margins
from ltjax.losses import log_class_prior as log_class_prior
from ltjax.losses import logit_adjusted_loss as logit_adjusted_loss
from ltjax.losses import softmax_cross_entropy as softmax_cross_entropy
from ltjax.meta import MetaStepOutput as MetaStepOutput
from ltjax.meta import meta_step as meta_step
from ltjax.weighting import class_balanced_weights as class_balanced_weights
from ltjax.weighting import effective_number as effective_number

__version__ = '0.1.0'
