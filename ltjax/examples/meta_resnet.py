r"""Runnable example: meta steps of Jamal et al. on a ResNet-32.

Takes CIFAR-style images from an ``.npz`` file (keys ``image`` uint8
``[N, 32, 32, 3]`` and ``label`` int ``[N]``, read without unpickling) or,
without ``--data``, random images. It carves a balanced dev set (``--dev``
per class), subsamples the rest to the long-tailed profile
``n_i = int(n_max (1/IF)^(i/(C-1)))``, and runs ``--steps`` meta steps with
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
from ltjax import models

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

MEAN = np.array([125.3, 123.0, 113.9]) / 255
STD = np.array([63.0, 62.1, 66.7]) / 255


def load(path: str | None, rng: np.random.Generator):
  if path is None:
    print('No --data: using random images, 10 classes.')
    images = rng.integers(0, 256, (5000, 32, 32, 3), dtype=np.uint8)
    return images, np.arange(5000) % 10
  try:
    with np.load(path, allow_pickle=False) as f:
      images, labels = f['image'], f['label']
  except FileNotFoundError:
    raise SystemExit(f'--data={path}: no such file.') from None
  except KeyError as e:
    raise SystemExit(
      f'--data={path} needs arrays "image" and "label": {e}'
    ) from None
  if images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(labels):
    raise SystemExit(
      f'--data={path}: expected image [N, H, W, 3] and label [N], got '
      f'{images.shape} and {labels.shape}.'
    )
  return images, labels.astype(np.int64)


def split(labels, dev_per_class, imbalance, rng):
  """Balanced dev indices, then long-tailed training indices from the rest."""
  classes = np.unique(labels)
  pools = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
  dev = np.concatenate([p[:dev_per_class] for p in pools])
  rest = [p[dev_per_class:] for p in pools]
  n_max = min(len(p) for p in rest)
  counts = [
    int(n_max * (1 / imbalance) ** (i / (len(classes) - 1)))
    for i in range(len(classes))
  ]
  train = np.concatenate([p[:n] for p, n in zip(rest, counts, strict=True)])
  return train, dev, np.array(counts)


def main(argv):
  del argv
  rng = np.random.default_rng(FLAGS.seed)
  images, labels = load(FLAGS.data, rng)
  train, dev, counts = split(labels, FLAGS.dev, FLAGS.imbalance, rng)
  num_classes = len(counts)
  print(f'{len(train)} long-tailed training images, counts {counts.tolist()}')
  print(f'{len(dev)} dev images ({FLAGS.dev} per class)')
  x = jnp.asarray((images / 255.0 - MEAN) / STD, jnp.float32)
  y = jnp.asarray(labels)

  model = models.ResNet32(num_classes=num_classes)
  variables = model.init(jax.random.key(FLAGS.seed), x[:1], train=False)
  params, stats = variables['params'], variables['batch_stats']
  loss_fn = models.make_loss_fn(model, ltjax.softmax_cross_entropy)
  class_weights = jnp.asarray(ltjax.class_balanced_weights(counts), jnp.float32)
  opt = optax.chain(
    optax.add_decayed_weights(5e-4),
    optax.sgd(FLAGS.lr, momentum=0.9, nesterov=True),
  )
  opt_state = opt.init(params)

  @jax.jit
  def train_step(params, stats, opt_state, idx, dev_idx):
    batch = {'image': x[idx], 'label': y[idx]}
    dev_batch = {'image': x[dev_idx], 'label': y[dev_idx]}
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

  eps_sum, seen = np.zeros(num_classes), np.zeros(num_classes)
  times = []
  for step in range(FLAGS.steps):
    idx = rng.choice(train, FLAGS.batch_size, replace=False)
    dev_idx = rng.choice(dev, min(FLAGS.batch_size, len(dev)), replace=False)
    start = time.perf_counter()
    params, stats, opt_state, out, e, n = train_step(
      params, stats, opt_state, idx, dev_idx
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
