r"""Places-LT (365 classes, 62.5k training images): ResNet-152.

Variants ``method=<name>`` (see ``ltjax.methods.METHODS``)::

  python -m ltjax.main --config=configs/places_lt.py:method=ours_ce \
    --workdir=runs/places_lt/ours_ce --config.data.tfds_data_dir=DIR \
    --config.data.places_lt_dir=SPLITS

Needs tfds ``places365_small`` prepared in DIR and the Places-LT split lists
(``Places_LT_{train,val,test}.txt``, README: preparing data) in SPLITS. Dev
set: 10 images per class carved from the Places-LT training list.

Schedule from the paper's presentation, ``lr = 0.01 * 0.1^(epoch // 10)``,
30 epochs, the meta stage from epoch 20. The paper fine-tunes an
ImageNet-pretrained ResNet-152; loading pretrained weights is not built yet,
so this config trains from scratch and will not match the paper's number.

Top-1 error (%) the paper reports: ce 73.00, cb_ce 71.14, ours_ce 69.20.
"""

from ltjax import config_lib


def get_config(arg=None):
  v = config_lib.parse_arg(arg, method='ours_ce')
  return config_lib.large_config(
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
