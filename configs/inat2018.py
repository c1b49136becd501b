r"""iNaturalist 2018 (8,142 classes, 437,513 training images): ResNet-50.

Variants ``method=<name>`` (see ``ltjax.methods.METHODS``)::

  python -m ltjax.main --config=configs/inat2018.py:method=ours_ce \
    --workdir=runs/inat2018/ours_ce --config.data.tfds_data_dir=DIR

Needs tfds ``i_naturalist2018`` prepared in DIR (README: preparing data).
The dev set is 2 images per class carved from train; the test set is the
official validation split. The official code covers CIFAR only; the schedule
here is that of LDAM-DRW's iNaturalist runs (90 epochs, lr 0.1 decayed 10x
at epochs 30 and 60, batch 256), with the meta stage (t2) from epoch 60.

Top-1 error (%) the paper reports: ce 36.20, cb_ce 34.69, ours_ce 32.45.
Its table also lists cRT (``method=crt``) from Kang et al. (ICLR 2020),
whose own figures are 34.8 top-1 error (90 epochs) and 32.4 (200 epochs).
"""

from ltjax import config_lib


def get_config(arg=None):
  v = config_lib.parse_arg(arg, method='ours_ce')
  return config_lib.large_config(
    'i_naturalist2018',
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
