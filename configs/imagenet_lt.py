r"""ImageNet-LT (1,000 classes, 115.8k training images).

Variants ``method=<name>`` (see ``ltjax.methods.METHODS``)::

  python -m ltjax.main --config=configs/imagenet_lt.py:method=ours_ce \
    --workdir=runs/imagenet_lt/ours_ce --config.data.tfds_data_dir=DIR

Needs tfds ``imagenet_lt`` prepared in DIR. The dev set is its validation
split (20 per class); ``--config.data.dev_source=carve`` carves 20 per class
from train instead. Test set: the 50,000-image test split.

Schedule from the paper's presentation, ``lr = 0.1 * 0.1^(epoch // 35)``,
90 epochs, the meta stage from epoch 70. The presentation names "ResNet32";
this config uses ResNet-10, the standard ImageNet-LT backbone (Liu et al.,
2019), since the CIFAR ResNet-32 is built for 32 x 32 inputs: pass
``--config.model=resnet32`` to follow the presentation literally.

Top-1 error (%) the paper reports: ce 74.74, cb_ce 73.41, ours_ce 70.10.
"""

from ltjax import config_lib


def get_config(arg=None):
  v = config_lib.parse_arg(arg, method='ours_ce')
  return config_lib.large_config(
    'imagenet_lt',
    v['method'],
    model='resnet10',
    num_epochs=90,
    stage2_epoch=70,
    learning_rate=0.1,
    lr_decay=0.1,
    lr_boundaries=(35, 70),
    weight_decay=5e-4,
    batch_size=256,
  )
