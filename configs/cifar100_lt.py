r"""CIFAR-100-LT (Jamal et al., CVPR 2020, Table 2): ResNet-32, 200 epochs.

Variants ``method=<name>,imb=<IF>`` as in ``configs/cifar10_lt.py``::

  python -m ltjax.main --config=configs/cifar100_lt.py:method=ours_ce,imb=100 \
    --workdir=runs/cifar100_lt/ours_ce_100

Test error (%) the paper reports, imbalance 200/100/50/20/10/1:
cross-entropy (``ce``) 65.16 61.68 56.15 48.86 44.29 29.50;
ours, CE (``ours_ce``) 60.69 56.65 51.47 44.38 40.42 28.14.
"""

from ltjax import config_lib


def get_config(arg=None):
  v = config_lib.parse_arg(arg, method='ours_ce', imb='100')
  config = config_lib.base_config('cifar100', v['method'])
  config.data.imbalance = float(v['imb'])
  return config
