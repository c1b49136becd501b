r"""Places-LT (365 classes, 62.5k training images): ImageNet-pretrained ResNet-152.

Variants ``method=<name>`` (see ``ltjax.methods.METHODS``)::

  python -m ltjax.main --config=configs/places_lt.py:method=ours_ce \
    --workdir=runs/places_lt/ours_ce --config.data.tfds_data_dir=DIR \
    --config.data.places_lt_dir=SPLITS --config.init_from=resnet152-394f9c45.pth

Needs tfds ``places365_small`` prepared in DIR and the Places-LT split lists
(``Places_LT_{train,val,test}.txt``, README: preparing data) in SPLITS. Dev
set: 10 images per class carved from the Places-LT training list.

As the Places-LT protocol (Liu et al., OLTR, CVPR 2019; followed by the
paper) the run fine-tunes an ImageNet-pretrained ResNet-152, so
``config.init_from`` is required: torchvision's ImageNet weights
(``torchvision.models.ResNet152_Weights.IMAGENET1K_V1``, the file
https://download.pytorch.org/models/resnet152-394f9c45.pth; nothing here
downloads it). Its 1000-class head is replaced by a fresh 365-class one.
OLTR started from Caffe-converted ImageNet weights, so expect small
differences from its numbers. ``--config.init_from=''`` trains from scratch.

Schedule from the paper's presentation, ``lr = 0.01 * 0.1^(epoch // 10)``,
30 epochs, the meta stage from epoch 20.

Top-1 error (%) the paper reports: ce 73.00, cb_ce 71.14, ours_ce 69.20.
"""

import ml_collections

from ltjax import config_lib


def get_config(arg=None):
  v = config_lib.parse_arg(arg, method='ours_ce')
  c = config_lib.large_config(
    'places_lt',
    v['method'],
    model='resnet152',
    num_epochs=30,
    stage2_epoch=20,
    learning_rate=0.01,
    lr_decay=0.1,
    weight_decay=1e-4,
    lr_boundaries=(10, 20),
    batch_size=128,
  )
  c.init_from = ml_collections.config_dict.placeholder(str)  # required
  return c
