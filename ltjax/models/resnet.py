"""ImageNet-style ResNets (torchvision layout, v1.5 strides).

ResNet-10 (basic blocks, 1-1-1-1), ResNet-50 (bottlenecks, 3-4-6-3) and
ResNet-152 (3-8-36-3), used in the paper for ImageNet-LT, iNaturalist and
Places-LT. Parameter counts equal torchvision's (25,557,032 for ResNet-50 at
1000 classes).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax

from ltjax.models import conv as conv_lib
from ltjax.models import layers


class _Block(nn.Module):
  features: int
  strides: int
  bottleneck: bool
  norm: functools.partial
  conv: functools.partial

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    out_features = self.features * (4 if self.bottleneck else 1)
    if self.bottleneck:
      y = nn.relu(
        self.norm(name='bn1')(self.conv(self.features, (1, 1), name='conv1')(x))
      )
      y = self.conv(
        self.features,
        (3, 3),
        self.strides,
        padding=((1, 1), (1, 1)),
        name='conv2',
      )(y)
      y = nn.relu(self.norm(name='bn2')(y))
      y = self.conv(out_features, (1, 1), name='conv3')(y)
      y = self.norm(name='bn3')(y)
    else:
      y = self.conv(
        self.features,
        (3, 3),
        self.strides,
        padding=((1, 1), (1, 1)),
        name='conv1',
      )(x)
      y = nn.relu(self.norm(name='bn1')(y))
      y = self.conv(
        self.features, (3, 3), padding=((1, 1), (1, 1)), name='conv2'
      )(y)
      y = self.norm(name='bn2')(y)
    if self.strides != 1 or x.shape[-1] != out_features:
      x = self.conv(out_features, (1, 1), self.strides, name='downsample_conv')(
        x
      )
      x = self.norm(name='downsample_bn')(x)
    return nn.relu(y + x)


class ResNet(nn.Module):
  """ImageNet ResNet on ``[batch, height, width, 3]`` images.

  Attributes:
    num_classes: outputs of the head.
    stage_sizes: blocks per stage.
    bottleneck: bottleneck (1x1-3x3-1x1, expansion 4) or basic blocks.
    widths: base channels per stage.
    cosine_head: a normalized (cosine) head for LDAM.
    unbiased_running_var: PyTorch's BatchNorm running variance (default).
    dtype: computation dtype (None: that of inputs and parameters).
    conv_impl: convolution formulation, ``'auto'``, ``'lax'`` or ``'cpu'``
      (see :func:`ltjax.models.conv.conv2d`).
  """

  num_classes: int
  stage_sizes: Sequence[int]
  bottleneck: bool = True
  widths: Sequence[int] = (64, 128, 256, 512)
  cosine_head: bool = False
  unbiased_running_var: bool = True
  dtype: layers.Dtype | None = None
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    conv = functools.partial(
      conv_lib.Conv,
      use_bias=False,
      padding='VALID',
      kernel_init=layers.kaiming_normal_fan_out,
      dtype=self.dtype,
      conv_impl=self.conv_impl,
    )
    norm = functools.partial(
      layers.BatchNorm,
      use_running_average=not train,
      unbiased_running_var=self.unbiased_running_var,
      dtype=self.dtype,
    )
    x = conv(self.widths[0], (7, 7), 2, padding=((3, 3), (3, 3)), name='conv1')(
      x
    )
    x = nn.relu(norm(name='bn1')(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

    def block(width, strides, name):
      return _Block(
        width,
        strides=strides,
        bottleneck=self.bottleneck,
        norm=norm,
        conv=conv,
        name=name,
      )

    x = layers.residual_stages(x, self.stage_sizes, self.widths, block)
    x = x.mean(axis=(1, 2))
    return layers.classifier_head(
      x,
      self.num_classes,
      self.cosine_head,
      layers.torch_linear_init,
      self.dtype,
      name='fc',
    )


ResNet10 = functools.partial(ResNet, stage_sizes=(1, 1, 1, 1), bottleneck=False)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3))
ResNet152 = functools.partial(ResNet, stage_sizes=(3, 8, 36, 3))
