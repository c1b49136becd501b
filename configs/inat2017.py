r"""iNaturalist 2017 (5,089 classes, 579,184 training images): ResNet-50.

Variants ``method=<name>`` (see ``ltjax.methods.METHODS``)::

  python -m ltjax.main --config=configs/inat2017.py:method=ours_ce \
    --workdir=runs/inat2017/ours_ce --config.data.tfds_data_dir=DIR

Needs tfds ``i_naturalist2017`` prepared in DIR. Dev set: 5 images per class
carved from train; test set: the official validation split. Schedule as
``configs/inat2018.py`` (the official code covers CIFAR only).

The paper's iNaturalist 2017 numbers are not copied into this repository;
compare against cross-entropy run with ``method=ce``.
"""

from ltjax import config_lib


def get_config(arg=None):
  v = config_lib.parse_arg(arg, method='ours_ce')
  return config_lib.large_config(
    'i_naturalist2017',
    v['method'],
    model='resnet50',
    num_epochs=90,
    stage2_epoch=60,
    learning_rate=0.1,
    lr_decay=0.1,
    weight_decay=1e-4,
    lr_boundaries=(30, 60),
    batch_size=256,
  )
