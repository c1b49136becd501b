"""Device-resident input pipeline for datasets that fit in accelerator memory.

CIFAR-LT is at most 50,000 uint8 images of 32 x 32 x 3 (150 MB): the whole
long-tailed subset and the dev set live on the device, and batches are
gathered and augmented inside the jitted step, so a training step transfers
nothing from the host. Every batch is a pure function of ``(key, step)``: the
example order is a fresh permutation per epoch, ``fold_in(key, epoch)``, so a
run resumed at any step sees exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ltjax.data import augment as augment_lib
from ltjax.data.arrays import ArrayData
from ltjax.errors import ConfigError


class DeviceData(NamedTuple):
  """A split on the device: uint8 ``image [N, H, W, C]``, int32 ``label [N]``."""

  image: jax.Array
  label: jax.Array


def to_device(data: ArrayData, sharding=None) -> DeviceData:
  """Puts a split on the device(s); ``sharding`` replicates it by default."""
  return DeviceData(
    jax.device_put(data.image, sharding), jax.device_put(data.label, sharding)
  )


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Full batches per epoch (the remainder, different each epoch, is dropped)."""
  if batch_size > num_examples:
    raise ConfigError(
      f'batch size {batch_size} exceeds the {num_examples} training examples; '
      f'lower the batch size.'
    )
  return num_examples // batch_size


def epoch_batch_indices(key, step, num_examples: int, batch_size: int):
  """Indices ``[batch_size]`` of training batch ``step``.

  Batch ``step`` is slice ``step mod S`` of the permutation of epoch
  ``step // S`` (``S`` = :func:`steps_per_epoch`), seeded by
  ``fold_in(key, epoch)``: every example is seen once per epoch.
  """
  num_steps = steps_per_epoch(num_examples, batch_size)
  epoch, pos = jnp.divmod(step, num_steps)
  perm = jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)
  return jax.lax.dynamic_slice(perm, (pos * batch_size,), (batch_size,))


def sampling_probabilities(labels, sampler: str) -> np.ndarray:
  """Per-example probabilities ``[N]`` (float64, summing to 1) of a sampler.

  A class ``c`` of ``n_c`` examples is drawn with probability ``∝ n_c^q``
  and an example uniformly within it: ``q = 0`` for ``'class'``
  (class-balanced: every class equally likely), ``q = 1/2`` for ``'sqrt'``
  (square-root sampling), ``q = 1`` for ``'instance'`` (every example
  equally likely).
  """
  labels = np.asarray(labels)
  counts = np.bincount(labels).astype(np.float64)
  q = {'instance': 1.0, 'sqrt': 0.5, 'class': 0.0}[sampler]
  present = counts > 0
  class_p = np.where(present, np.where(present, counts, 1.0) ** q, 0.0)
  class_p /= class_p.sum()
  return class_p[labels] / counts[labels]


def sampled_batch_indices(key, step, probabilities, batch_size: int):
  """Indices ``[batch_size]`` of batch ``step`` drawn with replacement from
  ``probabilities [N]``, from ``fold_in(key, step)`` alone (a resumed run
  draws the same batches)."""
  return jax.random.choice(
    jax.random.fold_in(key, step),
    probabilities.shape[0],
    (batch_size,),
    replace=True,
    p=probabilities,
  )


def gather(data: DeviceData, indices, key=None, *, augment=True, dtype=None):
  """The batch at ``indices``, augmented with ``key`` when ``augment``.

  Returns ``{'image': [B, H, W, C] float, 'label': [B] int32}``; without
  augmentation the images are only normalized (evaluation).
  """
  dtype = dtype or jnp.float32
  image = data.image[indices]
  if augment:
    image = augment_lib.augment(key, image, dtype=dtype)
  else:
    image = augment_lib.normalize(image, dtype=dtype)
  return {'image': image, 'label': data.label[indices]}


def train_batch(
  data: DeviceData, key, step, batch_size: int, probabilities=None, **kwargs
):
  """Training batch ``step``, freshly augmented: epoch-permuted indices, or
  indices drawn from ``probabilities [N]``
  (:func:`sampling_probabilities`) when given."""
  k_order, k_aug = jax.random.split(key)
  if probabilities is None:
    idx = epoch_batch_indices(k_order, step, data.label.shape[0], batch_size)
  else:
    idx = sampled_batch_indices(k_order, step, probabilities, batch_size)
  return gather(data, idx, jax.random.fold_in(k_aug, step), **kwargs)


def dev_batch(data: DeviceData, key, batch_size: int, **kwargs):
  """A fresh random dev batch with the training augmentation.

  Draws ``batch_size`` distinct examples (with replacement only when the dev
  set is smaller than the batch), as the official code's shuffled dev loader
  does for its 100-image dev batches.
  """
  k_idx, k_aug = jax.random.split(key)
  n = data.label.shape[0]
  idx = jax.random.choice(k_idx, n, (batch_size,), replace=batch_size > n)
  return gather(data, idx, k_aug, **kwargs)
