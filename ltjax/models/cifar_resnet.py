"""The CIFAR ResNet of the official code (He et al., 2016, Sec. 4.2).

ResNet-(6n+2): a 3x3 stem, three stages of ``n`` basic blocks with widths
16/32/64, "option A" shortcuts (stride-2 subsampling and zero-padded channels,
no parameters), global average pooling and a linear or cosine head. Weights
use Kaiming-normal init, as the official code (itself from akamaster's
``pytorch_resnet_cifar10``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ltjax.models import conv, layers


def _conv3x3(
  features: int, strides: int, dtype, conv_impl: str, name: str
) -> conv.Conv:
  # Explicit (1, 1) padding: 'SAME' pads (0, 1) for stride 2, unlike PyTorch.
  return conv.Conv(
    features,
    (3, 3),
    strides=strides,
    padding=((1, 1), (1, 1)),
    use_bias=False,
    kernel_init=layers.kaiming_normal_fan_in,
    dtype=dtype,
    conv_impl=conv_impl,
    name=name,
  )


def option_a_shortcut(x: jax.Array, features: int) -> jax.Array:
  """Subsample by 2 and zero-pad channels equally on both sides (NHWC)."""
  x = x[:, ::2, ::2, :]
  pad = (features - x.shape[-1]) // 2
  return jnp.pad(
    x, ((0, 0), (0, 0), (0, 0), (pad, features - x.shape[-1] - pad))
  )


class CifarBasicBlock(nn.Module):
  features: int
  strides: int = 1
  dtype: layers.Dtype | None = None
  unbiased_running_var: bool = True
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    norm = functools.partial(
      layers.BatchNorm,
      use_running_average=not train,
      unbiased_running_var=self.unbiased_running_var,
      dtype=self.dtype,
    )
    conv3x3 = functools.partial(
      _conv3x3, dtype=self.dtype, conv_impl=self.conv_impl
    )
    y = conv3x3(self.features, self.strides, name='conv1')(x)
    y = nn.relu(norm(name='bn1')(y))
    y = conv3x3(self.features, 1, name='conv2')(y)
    y = norm(name='bn2')(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = option_a_shortcut(x, self.features)
    return nn.relu(y + x)


class CifarResNet(nn.Module):
  """CIFAR ResNet with option-A shortcuts.

  Attributes:
    num_classes: outputs of the head.
    stage_sizes: basic blocks per stage; ``(5, 5, 5)`` is ResNet-32.
    widths: channels per stage.
    cosine_head: a normalized (cosine) head for LDAM instead of a linear one.
    unbiased_running_var: PyTorch's BatchNorm running variance (default).
    dtype: computation dtype (None: that of the inputs and parameters).
    conv_impl: convolution formulation, ``'auto'`` (fast on each platform),
      ``'lax'`` or ``'cpu'``; all give the same numbers (see
      :func:`ltjax.models.conv.conv2d`).

  Call it on ``[batch, height, width, 3]`` images with ``train`` selecting
  batch statistics (and their update) or the running averages; it returns
  ``[batch, num_classes]`` logits.
  """

  num_classes: int
  stage_sizes: Sequence[int] = (5, 5, 5)
  widths: Sequence[int] = (16, 32, 64)
  cosine_head: bool = False
  unbiased_running_var: bool = True
  dtype: layers.Dtype | None = None
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    if len(self.stage_sizes) != len(self.widths):
      raise ValueError(
        f'stage_sizes {self.stage_sizes} and widths {self.widths} must have '
        'the same length.'
      )
    x = _conv3x3(self.widths[0], 1, self.dtype, self.conv_impl, 'conv1')(x)
    x = layers.BatchNorm(
      use_running_average=not train,
      unbiased_running_var=self.unbiased_running_var,
      dtype=self.dtype,
      name='bn1',
    )(x)
    x = nn.relu(x)

    def block(width, strides, name):
      module = CifarBasicBlock(
        width,
        strides=strides,
        dtype=self.dtype,
        unbiased_running_var=self.unbiased_running_var,
        conv_impl=self.conv_impl,
        name=name,
      )
      return lambda y: module(y, train)

    x = layers.residual_stages(x, self.stage_sizes, self.widths, block)
    x = x.mean(axis=(1, 2))
    return layers.classifier_head(
      x,
      self.num_classes,
      self.cosine_head,
      layers.kaiming_normal_fan_in,
      self.dtype,
      name='linear',
    )


ResNet32 = functools.partial(CifarResNet, stage_sizes=(5, 5, 5))
ResNet32.__doc__ = 'ResNet-32 of the official CIFAR code (0.46M parameters).'
# Tiny variant for fast tests: one block per stage, widths 4/8/16.
TinyResNet = functools.partial(
  CifarResNet, stage_sizes=(1, 1, 1), widths=(4, 8, 16)
)
