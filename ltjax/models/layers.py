"""Layers shared by the ResNets: PyTorch-convention BatchNorm, heads, inits."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# Kaiming-normal (He et al.) as torch.nn.init.kaiming_normal_: an untruncated
# normal with variance 2 / fan_in (Flax's `kaiming_normal` is truncated).
kaiming_normal_fan_in = nn.initializers.variance_scaling(
  2.0, 'fan_in', 'normal'
)
kaiming_normal_fan_out = nn.initializers.variance_scaling(
  2.0, 'fan_out', 'normal'
)
# torch.nn.Linear's default weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_linear_init = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')


def torch_bias_init(fan_in: int):
  """torch.nn.Linear's default bias init, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
  bound = fan_in**-0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class BatchNorm(nn.Module):
  """Batch normalization with PyTorch's conventions.

  Training mode normalizes with the biased batch variance and updates the
  running statistics as ``r <- (1 - momentum) r + momentum * batch``, where
  the running variance takes the *unbiased* batch variance
  ``var * n / (n - 1)`` like ``torch.nn.BatchNorm2d`` (Flax's BatchNorm uses the
  biased one). Statistics live in the ``'batch_stats'`` collection as ``mean``
  and ``var``.

  Attributes:
    use_running_average: normalize with the running statistics (evaluation).
    momentum: PyTorch-style momentum (0.1), the weight of the new batch.
    epsilon: added to the variance.
    unbiased_running_var: store the unbiased variance in the running average
      (PyTorch, and so the official code). False gives Flax's behaviour.
    dtype: computation dtype of the output; None keeps the input's.
    param_dtype: dtype of scale, bias and the running statistics.
    scale_init: initializer of the scale (zeros for a zero-init residual).
  """

  use_running_average: bool = False
  momentum: float = 0.1
  epsilon: float = 1e-5
  unbiased_running_var: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  scale_init: Any = nn.initializers.ones

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = x.shape[-1]
    shape = (features,)
    ra_mean = self.variable(
      'batch_stats', 'mean', lambda: jnp.zeros(shape, self.param_dtype)
    )
    ra_var = self.variable(
      'batch_stats', 'var', lambda: jnp.ones(shape, self.param_dtype)
    )
    scale = self.param('scale', self.scale_init, shape, self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, shape, self.param_dtype)

    # Statistics in at least float32 even when activations are bfloat16.
    stat_dtype = jnp.promote_types(x.dtype, jnp.float32)
    if self.use_running_average:
      mean = ra_mean.value.astype(stat_dtype)
      var = ra_var.value.astype(stat_dtype)
    else:
      axes = tuple(range(x.ndim - 1))
      xs = x.astype(stat_dtype)
      mean = xs.mean(axes)
      var = jnp.square(xs - mean).mean(axes)
      if not self.is_initializing():
        n = x.size // features
        running_var = (
          var * (n / (n - 1)) if (self.unbiased_running_var and n > 1) else var
        )
        m = self.momentum
        ra_mean.value = (1 - m) * ra_mean.value + m * mean.astype(
          ra_mean.value.dtype
        )
        ra_var.value = (1 - m) * ra_var.value + m * running_var.astype(
          ra_var.value.dtype
        )
    mul = scale.astype(stat_dtype) * jax.lax.rsqrt(var + self.epsilon)
    y = (x.astype(stat_dtype) - mean) * mul + bias.astype(stat_dtype)
    return y.astype(self.dtype or x.dtype)


class CosineHead(nn.Module):
  """Normalized linear head: ``cos(x, W_j)`` logits in ``[-1, 1]`` (for LDAM).

  As ``NormedLinear`` in the LDAM-DRW and Longtail_DA code: features and each
  class's weight column are L2-normalized; there is no bias. Scale the logits
  in the loss (``ldam_loss(..., scale=30)``).
  """

  num_classes: int
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    def init(key, shape, dtype=jnp.float32):
      w = jax.random.uniform(key, shape, dtype, -1.0, 1.0)
      return w / jnp.linalg.norm(w, axis=0, keepdims=True)

    w = self.param(
      'kernel', init, (x.shape[-1], self.num_classes), self.param_dtype
    )
    x, w = nn.dtypes.promote_dtype(x, w, dtype=self.dtype)
    x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    w = w / jnp.maximum(jnp.linalg.norm(w, axis=0, keepdims=True), 1e-12)
    return x @ w


def classifier_head(
  x: jax.Array,
  num_classes: int,
  cosine: bool,
  kernel_init,
  dtype: Dtype | None,
  name: str = 'head',
) -> jax.Array:
  """Linear (PyTorch-initialized bias) or cosine classifier on ``[batch, d]``."""
  if cosine:
    return CosineHead(num_classes, dtype=dtype, name=name)(x)
  return nn.Dense(
    num_classes,
    kernel_init=kernel_init,
    bias_init=torch_bias_init(x.shape[-1]),
    dtype=dtype,
    name=name,
  )(x)


def residual_stages(x, stage_sizes, widths, block):
  """The residual stages of a ResNet, applied to ``x``.

  Stage ``i`` stacks ``stage_sizes[i]`` blocks of width ``widths[i]``; the
  first block of every stage after the first has stride 2 (as torchvision's
  and the official CIFAR ResNet). ``block(width, strides, name)`` returns the
  block as a function of ``x``; blocks are named ``layer{i + 1}_{j}``, as
  torchvision's ``layer{i + 1}[j]``.
  """
  for i, (size, width) in enumerate(zip(stage_sizes, widths, strict=True)):
    for j in range(size):
      strides = 2 if (i > 0 and j == 0) else 1
      x = block(width, strides, f'layer{i + 1}_{j}')(x)
  return x
