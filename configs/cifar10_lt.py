r"""CIFAR-10-LT (Jamal et al., CVPR 2020, Table 1): ResNet-32, 200 epochs.

Variants ``method=<name>,imb=<IF>``; methods as in ``ltjax.methods.METHODS``
(ce, cb_ce, focal, cb_focal, ldam, ldam_drw, cb_finetune, l2rw, mwn, ours_ce,
ours_focal, ours_ldam; after the paper crt, lws, tau_norm, la, la_posthoc,
bs, ours_la), imbalance factors 200, 100, 50, 20, 10, 1::

  python -m ltjax.main --config=configs/cifar10_lt.py:method=ours_ce,imb=100 \
    --workdir=runs/cifar10_lt/ours_ce_100

Offline, on the 5,085 real CIFAR-10 images of ``shared/data`` (a subset, so
not the paper's numbers): ``--config=configs/cifar10_lt.py:source=npz`` plus
``--config.data.dir=../shared/data``.

Test error (%) the paper reports, imbalance 200/100/50/20/10/1:

=============  =====  =====  =====  =====  =====  =====
method          200    100    50     20     10     1
=============  =====  =====  =====  =====  =====  =====
ce             34.32  29.64  25.19  17.77  13.61  7.53
cb_ce          31.11  27.63  21.95  15.64  13.23  7.53
l2rw             -    27.77  23.55  18.65  17.88  11.60
mwn              -    26.43  20.90  15.55  12.45  7.19
ours_ce        29.34  23.59  19.49  13.54  11.15  7.21
focal          34.71  29.62  23.29  17.24  13.34  6.97
cb_focal       31.85  25.43  20.78  16.22  12.52  6.97
ours_focal     25.57  21.10  17.12  13.90  11.63  7.19
ldam_drw         -    22.97    -      -    11.84    -
ours_ldam      22.77  20.00  17.77  15.63  12.60  10.29
=============  =====  =====  =====  =====  =====  =====

``ldam``, ``cb_finetune`` and the methods after the paper have no CIFAR-10
row in it.

``epochs=<E>,meta_epochs=<M>`` shortens the schedule (the last ``M`` epochs
in stage 2, one lr drop when it starts), e.g. a first run of about a minute
on a laptop CPU::

  python -m ltjax.main --workdir=runs/first \
    --config=configs/cifar10_lt.py:source=npz,epochs=6,meta_epochs=2 \
    --config.model=tiny --config.eval_every_epochs=2 \
    --config.data.dir=../shared/data
"""

from ltjax import config_lib

# The table above: method -> {imbalance: test error %} (None: not reported).
_IMBALANCES = (200, 100, 50, 20, 10, 1)
_ROWS = {
  'ce': (34.32, 29.64, 25.19, 17.77, 13.61, 7.53),
  'cb_ce': (31.11, 27.63, 21.95, 15.64, 13.23, 7.53),
  'l2rw': (None, 27.77, 23.55, 18.65, 17.88, 11.60),
  'mwn': (None, 26.43, 20.90, 15.55, 12.45, 7.19),
  'ours_ce': (29.34, 23.59, 19.49, 13.54, 11.15, 7.21),
  'focal': (34.71, 29.62, 23.29, 17.24, 13.34, 6.97),
  'cb_focal': (31.85, 25.43, 20.78, 16.22, 12.52, 6.97),
  'ours_focal': (25.57, 21.10, 17.12, 13.90, 11.63, 7.19),
  'ldam_drw': (None, 22.97, None, None, 11.84, None),
  'ours_ldam': (22.77, 20.00, 17.77, 15.63, 12.60, 10.29),
}
PAPER_TEST_ERROR = {
  m: dict(zip(_IMBALANCES, row, strict=True)) for m, row in _ROWS.items()
}


def get_config(arg=None):
  v = config_lib.parse_arg(
    arg, method='ours_ce', imb=100.0, source='tfds', epochs=200, meta_epochs=40
  )
  # The official CIFAR protocol (Jamal et al.; the official code's main.py).
  config = config_lib.base_config(
    'cifar10',
    v['method'],
    model='resnet32',
    batch_size=100,  # training and dev batches
    num_epochs=200,
    stage2_epoch=160,  # t1 = [0, 160): plain training; t2: the method
    learning_rate=0.1,  # SGD, momentum 0.9, Nesterov
    lr_boundaries=(160, 180),  # epochs where the lr is multiplied by ...
    lr_decay=0.01,
    weight_decay=5e-4,
  )
  config.data.imbalance = v['imb']  # n_i = n_max (1/imb)^(i/(C-1))
  config_lib.shorten(config, v['epochs'], v['meta_epochs'])
  if v['source'] == 'npz':
    config.dataset = 'npz'
    config.num_classes = 10
    config.data.train_file = 'cifar10_prefix_train.npz'
    config.data.test_per_class = 100
    config.data.name = 'CIFAR-10-LT subset'
  return config
