"""The official CIFAR augmentation, on the device and as a NumPy twin.

Training images are reflect-padded by 4 pixels, cropped back to 32 x 32 at a
random offset, flipped horizontally with probability 1/2 and normalized with
the official mean and standard deviation. The random draws are separate from
their application (:func:`draw_crops_and_flips`), so the jitted device version
(:func:`augment`) and the NumPy version (:func:`augment_numpy`) can be fed the
same draws and compared exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# The official code's normalization (per channel, on images scaled to [0, 1]).
CIFAR_MEAN = np.array([125.3, 123.0, 113.9], np.float32) / 255
CIFAR_STD = np.array([63.0, 62.1, 66.7], np.float32) / 255
PAD = 4


def normalize(image, mean=CIFAR_MEAN, std=CIFAR_STD, dtype=jnp.float32):
  """``(image / 255 - mean) / std`` of uint8 images ``[..., H, W, 3]``."""
  x = image.astype(jnp.float32) / 255
  return ((x - mean) / std).astype(dtype)


def draw_crops_and_flips(key, batch_size: int, pad: int = PAD):
  """Random crop offsets ``[B, 2]`` in ``0..2 pad`` and flips ``[B]``."""
  k_crop, k_flip = jax.random.split(key)
  offsets = jax.random.randint(k_crop, (batch_size, 2), 0, 2 * pad + 1)
  flips = jax.random.bernoulli(k_flip, 0.5, (batch_size,))
  return offsets, flips


def crop_and_flip(image, offsets, flips, pad: int = PAD):
  """Reflect-pads ``pad``, crops each image at ``offsets`` and flips.

  Args:
    image: ``[B, H, W, C]`` images (any dtype).
    offsets: ``[B, 2]`` integer (row, column) of the crop in the padded image.
    flips: ``[B]`` booleans, True mirrors the crop left-right.

  Returns:
    ``[B, H, W, C]``: each crop is the ``H x W`` window of the padded image at
    its offset, mirrored where ``flips`` is set.
  """
  _, h, w, c = image.shape
  padded = jnp.pad(image, ((0, 0), (pad, pad), (pad, pad), (0, 0)), 'reflect')

  def one(x, offset, flip):
    crop = jax.lax.dynamic_slice(x, (offset[0], offset[1], 0), (h, w, c))
    return jnp.where(flip, crop[:, ::-1], crop)

  return jax.vmap(one)(padded, offsets, flips)


def augment(key, image, *, pad: int = PAD, dtype=jnp.float32):
  """The official training augmentation of uint8 ``[B, 32, 32, 3]`` images.

  Traceable and jittable; returns normalized ``[B, 32, 32, 3]`` ``dtype``.
  """
  offsets, flips = draw_crops_and_flips(key, image.shape[0], pad)
  return normalize(crop_and_flip(image, offsets, flips, pad), dtype=dtype)


def augment_numpy(image, offsets, flips, *, pad: int = PAD):
  """NumPy twin of :func:`augment` for given draws (a reference for tests).

  Pads with ``np.pad(mode='reflect')`` and slices in a Python loop, the way a
  per-image host pipeline would.
  """
  image = np.asarray(image)
  _, h, w, _ = image.shape
  out = []
  for x, (r, c), flip in zip(
    image, np.asarray(offsets), np.asarray(flips), strict=True
  ):
    x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)), mode='reflect')
    x = x[r : r + h, c : c + w]
    out.append(x[:, ::-1] if flip else x)
  x = np.stack(out).astype(np.float32) / 255
  return (x - CIFAR_MEAN) / CIFAR_STD
