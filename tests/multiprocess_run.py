"""One process of a run for tests/test_multiprocess.py.

``python -m tests.multiprocess_run SPEC PROCESS_ID NUM_PROCESSES PORT``:
joins ``jax.distributed`` on ``localhost:PORT`` (when ``NUM_PROCESSES > 1``;
CPU collectives through gloo), builds the config SPEC names (JSON:
``config``, ``variant``, ``fields``, ``workdir``), and trains it with
``train_and_evaluate``. With ``SPEC['tfds']`` (``{'sizes', 'num_classes'}``)
the dataset is ``tfds.testing.mock_data``; with ``SPEC['record']`` (a folder)
every local training batch this process's pipeline yields is written to
``record/p{PROCESS_ID}.jsonl`` as its labels and one checksum per image.
SIGUSR1 prints every thread's Python stack to stderr (what the test asks
of a process that hangs, before it kills it).
"""

import faulthandler
import json
import os
import signal
import sys

os.environ.setdefault('JAX_CPU_COLLECTIVES_IMPLEMENTATION', 'gloo')

import numpy as np  # noqa: E402
from absl import logging  # noqa: E402


def checksums(images):
  """One number per image that changes when a pixel moves (a flip, a shift)."""
  x = images.astype(np.float64)
  h, w = x.shape[1:3]
  weight = 1 + np.arange(h)[:, None, None] * w + np.arange(w)[None, :, None]
  return (x * weight).sum((1, 2, 3))


def record_batches(folder, process_id):
  """Wraps ``tf_pipeline.train_batches`` to log what this process yields."""
  from ltjax.data import tf_pipeline  # noqa: PLC0415

  original = tf_pipeline.train_batches
  path = os.path.join(folder, f'p{process_id}.jsonl')

  def recorded(ds, **kwargs):
    stream = kwargs['num_examples']  # the training or the dev set
    for step, batch in enumerate(original(ds, **kwargs)):
      with open(path, 'a') as f:
        row = {
          'stream': stream,
          'step': kwargs['start_step'] + step,
          'label': batch['label'].tolist(),
          'sum': checksums(batch['image']).tolist(),
        }
        f.write(json.dumps(row) + '\n')
      yield batch

  tf_pipeline.train_batches = recorded


def mock_tfds(sizes, num_classes):
  """``tfds.testing.mock_data`` with ``sizes[split]`` PNGs, labels cycling."""
  import tensorflow as tf  # noqa: PLC0415

  rng = np.random.default_rng(0)
  pngs = [
    tf.io.encode_png(rng.integers(0, 256, (8, 8, 3), np.uint8)).numpy()
    for _ in range(16)
  ]

  def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
    n = sizes[str(split)]
    return tf.data.Dataset.from_tensor_slices(
      {
        'image': [pngs[i % 16] for i in range(n)],
        'label': np.arange(n) % num_classes,
      }
    )

  from tests import fake_tfds  # noqa: PLC0415

  return fake_tfds.mock_data(as_dataset)


def main(spec, process_id, num_processes, port):
  logging.set_verbosity(logging.INFO)  # the trainer's log, on stderr
  from ltjax import config_lib, devices, train  # noqa: PLC0415

  if num_processes > 1:  # as ltjax.main's --coordinator_address etc.
    devices.join_processes(f'localhost:{port}', num_processes, process_id)

  config = config_lib.from_file(spec['config'], spec['variant'])
  for key, value in spec['fields'].items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = tuple(value) if isinstance(value, list) else value
  if spec.get('record'):
    record_batches(spec['record'], process_id)
  if spec.get('fault') == 'shard_read_twice':  # a negative control
    from ltjax import inputs  # noqa: PLC0415

    original = inputs.HostInput.__init__

    def every_process_reads_shard_0(self, *args, **kwargs):
      original(self, *args, **kwargs)
      self._process = (0, self._process[1])

    inputs.HostInput.__init__ = every_process_reads_shard_0
  if spec.get('tfds'):
    with mock_tfds(spec['tfds']['sizes'], spec['tfds']['num_classes']):
      train.train_and_evaluate(config, spec['workdir'])
  else:
    train.train_and_evaluate(config, spec['workdir'])


if __name__ == '__main__':
  faulthandler.register(signal.SIGUSR1, all_threads=True)
  main(json.loads(sys.argv[1]), *map(int, sys.argv[2:5]))
