r"""Runnable example: meta steps of Jamal et al. on a ResNet-32.

Takes CIFAR-style images from an ``.npz`` file (keys ``image`` uint8
``[N, 32, 32, 3]`` and ``label`` int ``[N]``, read without unpickling) or,
without ``--data``, random images. It carves a balanced dev set (``--dev``
per class), subsamples the rest to the long-tailed profile
``n_i = int(n_max (1/IF)^(i/(C-1)))`` (``ltjax.data.long_tail_split``), keeps
both on the device with the official augmentation
(``ltjax.data.device_pipeline``), and runs ``--steps`` meta steps with
class-balanced base weights and the official meta-stage optimizer (SGD,
Nesterov momentum 0.9, weight decay 5e-4). It prints the losses, the learned
ε per class and the step time. The full trainer (augmentation, schedules,
evaluation, checkpoints) is ``ltjax.main``'s job; this shows the API.

    python -m ltjax.examples.meta_resnet \
        --data=../shared/data/cifar10_prefix_train.npz --steps=20
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

import ltjax
from ltjax import data, models
from ltjax.data import device_pipeline as pipeline

flags.DEFINE_string('data', None, 'Path of an .npz with image and label.')
flags.DEFINE_integer('steps', 20, 'Meta steps to run.')
flags.DEFINE_integer('batch_size', 100, 'Training and dev batch size.')
flags.DEFINE_float('imbalance', 100.0, 'Imbalance factor n_max / n_min.')
flags.DEFINE_integer('dev', 10, 'Dev images per class.')
flags.DEFINE_float(
  'lr',
  0.001,
  'Learning rate and inner step size; 0.001 is the official meta stage '
  '(0.1 x 0.01 after epoch 160).',
)
flags.DEFINE_integer('seed', 0, 'Random seed.')
FLAGS = flags.FLAGS


def load(path: str | None) -> data.ArrayData:
  if path is None:
    print('No --data: using random images, 10 classes.')
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5000, 32, 32, 3), dtype=np.uint8)
    return data.from_arrays(images, np.arange(5000) % 10)
  try:
    return data.load_npz(path)
  except (FileNotFoundError, ValueError) as e:
    raise SystemExit(f'--data: {e}') from None


def make_train_step(loss_fn, opt, train_data, dev_data, keys, class_weights):
  """A jitted step ``(params, stats, opt_state, step) -> (..., out, eps per
  class summed, examples per class)`` of ``ltjax.meta_step`` and ``opt``."""
  k_train, k_dev = keys
  num_classes = len(class_weights)

  @jax.jit
  def train_step(params, stats, opt_state, step):
    # Batches gathered and augmented on the device, from (key, step).
    batch = pipeline.train_batch(train_data, k_train, step, FLAGS.batch_size)
    dev_batch = pipeline.dev_batch(
      dev_data, jax.random.fold_in(k_dev, step), FLAGS.batch_size
    )
    out = ltjax.meta_step(
      loss_fn, params, stats, batch, dev_batch, class_weights[batch['label']],
      inner_lr=FLAGS.lr,
    )  # fmt: skip
    updates, opt_state = opt.update(out.grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    eps_sum = jax.ops.segment_sum(out.eps, batch['label'], num_classes)
    seen = jax.ops.segment_sum(
      jnp.ones_like(out.eps), batch['label'], num_classes
    )
    return params, out.model_state, opt_state, out, eps_sum, seen

  return train_step


def main(argv):
  del argv
  arrays = load(FLAGS.data)
  num_classes = int(arrays.label.max()) + 1
  split = data.long_tail_split(
    arrays.label, num_classes, FLAGS.imbalance, FLAGS.dev, seed=FLAGS.seed
  )
  counts = split.class_counts
  print(f'{split.summary()}; counts {counts.tolist()}')
  train_data = pipeline.to_device(arrays.subset(split.train))
  dev_data = pipeline.to_device(arrays.subset(split.dev))

  model = models.ResNet32(num_classes=num_classes)
  key = jax.random.key(FLAGS.seed)
  k_init, k_train, k_dev = jax.random.split(key, 3)
  variables = model.init(k_init, jnp.zeros((1, 32, 32, 3)), train=False)
  params, stats = variables['params'], variables['batch_stats']
  loss_fn = models.make_loss_fn(model, ltjax.softmax_cross_entropy)
  class_weights = jnp.asarray(ltjax.class_balanced_weights(counts), jnp.float32)
  opt = optax.chain(
    optax.add_decayed_weights(5e-4),
    optax.sgd(FLAGS.lr, momentum=0.9, nesterov=True),
  )
  opt_state = opt.init(params)

  train_step = make_train_step(
    loss_fn, opt, train_data, dev_data, (k_train, k_dev), class_weights
  )

  eps_sum, seen = np.zeros(num_classes), np.zeros(num_classes)
  times = []
  for step in range(FLAGS.steps):
    start = time.perf_counter()
    params, stats, opt_state, out, e, n = train_step(
      params, stats, opt_state, step
    )
    jax.block_until_ready(out)
    times.append(time.perf_counter() - start)
    eps_sum += np.asarray(e)
    seen += np.asarray(n)
    print(
      f'step {step + 1:4d}/{FLAGS.steps}  train loss {float(out.train_loss):.4f}'
      f'  dev loss {float(out.dev_loss):.4f}  mean |eps| '
      f'{float(jnp.abs(out.eps).mean()):.2e}  {times[-1] * 1e3:7.0f} ms',
      flush=True,
    )
  mean_eps = np.where(seen > 0, eps_sum / np.maximum(seen, 1), np.nan)
  print('class weights w_y:', [f'{v:.3f}' for v in np.asarray(class_weights)])
  print('mean eps per class:', [f'{v:.2e}' for v in mean_eps])
  if len(times) > 1:
    print(
      f'median step time after compilation: {np.median(times[1:]) * 1e3:.0f} '
      f'ms ({jax.devices()[0].platform})'
    )


if __name__ == '__main__':
  app.run(main)
