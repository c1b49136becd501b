r"""CIFAR-100-LT (Jamal et al., CVPR 2020, Table 2): ResNet-32, 200 epochs.

Variants ``method=<name>,imb=<IF>`` (and ``epochs``, ``meta_epochs``) as in
``configs/cifar10_lt.py``::

  python -m ltjax.main --config=configs/cifar100_lt.py:method=ours_ce,imb=100 \
    --workdir=runs/cifar100_lt/ours_ce_100

Test error (%) the paper reports, imbalance 200/100/50/20/10/1:
cross-entropy (``ce``) 65.16 61.68 56.15 48.86 44.29 29.50;
ours, CE (``ours_ce``) 60.69 56.65 51.47 44.38 40.42 28.14.
"""

from ltjax import config_lib


def get_config(arg=None):
  v = config_lib.parse_arg(
    arg, method='ours_ce', imb=100.0, epochs=200, meta_epochs=40
  )
  # The official CIFAR protocol, as configs/cifar10_lt.py.
  config = config_lib.base_config(
    'cifar100',
    v['method'],
    model='resnet32',
    batch_size=100,
    num_epochs=200,
    stage2_epoch=160,
    learning_rate=0.1,
    lr_boundaries=(160, 180),
    lr_decay=0.01,
    weight_decay=5e-4,
  )
  config.data.imbalance = v['imb']
  config_lib.shorten(config, v['epochs'], v['meta_epochs'])
  return config
