"""Trains and evaluates a model: ``python -m ltjax.main --config=... --workdir=...``.

Example (README has more)::

  python -m ltjax.main --config=configs/cifar10_lt.py:method=ours_ce,imb=100 \
    --workdir=runs/cifar10_lt_ours_100
"""

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from ltjax import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  'config', None, 'Config file, e.g. configs/cifar10_lt.py:method=ce,imb=100.'
)
flags.DEFINE_string('workdir', None, 'Where checkpoints and results go.')
flags.DEFINE_string(
  'coordinator_address', None, 'Multi-host: address of process 0 (host:port).'
)
flags.DEFINE_integer('num_processes', None, 'Multi-host: number of processes.')
flags.DEFINE_integer('process_id', None, 'Multi-host: this process index.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  if FLAGS.coordinator_address:
    jax.distributed.initialize(
      FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id
    )
  logging.info('JAX devices: %s', jax.devices())
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)
