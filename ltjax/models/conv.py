"""2D convolution with a formulation that XLA:CPU differentiates fast.

Why: the filter (weight) gradient of ``lax.conv_general_dilated`` is itself a
convolution whose operands XLA:CPU wants in a batch-minor layout: it
transposes the layer input ``x`` from ``[N, H, W, C]`` to ``[C, H, W, N]``
(and the output gradient to ``[H, W, N, O]``). XLA fuses each transpose with
the elementwise ops that produced its operand and, because they are cheap,
*duplicates* them into the fusion. In a ResNet the input of a convolution is
``relu(bn(conv(...)) + shortcut)``, whose shortcut is the previous block's
output, and so on: the transpose fusion recomputes the BatchNorm, residual
adds and ReLUs of up to five earlier blocks, reading some 30 arrays in the
transposed (64 KiB-strided) order: on a CPU, a large share of a ResNet-32
training step (BENCHMARKS.md, "Training steps", times the step with and
without the fix: ``python -m benchmarks.meta_step --conv_impl=auto,lax``).

The fix (``impl='cpu'``): divide the input by a run-time one before the
convolution. XLA classifies a floating-point division as expensive and never
duplicates it, so the producer chain is fused once into the division, whose
output is materialized, and the transposes read that buffer instead of
recomputing it. ``x / 1`` is exact, the convolution is the same
``lax.conv_general_dilated``, and only standard primitives are used, so
every transformation (``grad``, ``jvp``/``linearize``, ``linear_transpose``,
``vmap``, higher orders) works unchanged. (``lax.optimization_barrier`` would
express the intent but XLA:CPU strips it before fusion; a ``custom_vjp`` rule
would break the forward mode that :func:`ltjax.meta_step` uses.)

``impl='auto'`` (the default) picks ``'cpu'`` when compiling for CPU and
``'lax'``, the plain convolution, on other platforms, through
``lax.platform_dependent``.

A second, independent loss on CPU is in the kernels: XLA:CPU hands every
convolution with more than 16 channels (and every filter gradient) to
YNNPACK, which runs convolutions of ResNet sizes on one core, while XLA's
Eigen convolutions use all of them (``python -m benchmarks.conv_layers``
times every ResNet-32 convolution with and without these options). That is
a compiler option,
not something a model can express: compile the training step with
``jax.jit(..., compiler_options=xla_cpu_compiler_options())``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Dtype = Any
PaddingLike = str | int | Sequence[int | tuple[int, int]]

CONV_IMPLS = ('auto', 'lax', 'cpu')
_DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')
# YNNPACK keeps dots and reductions; convolutions go to Eigen.
_YNN_FUSION_TYPE = 'xla_cpu_experimental_ynn_fusion_type'
_CPU_OPTIONS = (
  (_YNN_FUSION_TYPE, 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,'
   'LIBRARY_FUSION_TYPE_REDUCE'),
)  # fmt: skip


@functools.cache
def _cpu_options_compile() -> bool:
  try:  # The option is experimental: check that this XLA knows it.
    jax.jit(lambda x: x + 1).lower(np.float32(0)).compile(
      compiler_options=dict(_CPU_OPTIONS)
    )
  except Exception:  # any failure: keep XLA's defaults
    return False
  return True


def xla_cpu_compiler_options() -> dict[str, str]:
  """XLA options for ``jax.jit(..., compiler_options=...)``: fast CPU convs.

  On CPU, keeps XLA from handing convolutions to YNNPACK (one core at ResNet
  sizes) so that they run in XLA's multi-threaded Eigen kernels; dots and
  reductions stay in YNNPACK. On 2 cores this made the ResNet-32 CE step
  1.45x and the meta step 1.2x faster. Results change only by float
  rounding (another summation order).

  Returns ``{}`` (XLA's defaults) on other backends, when ``XLA_FLAGS``
  already sets ``xla_cpu_experimental_ynn_fusion_type`` or when this XLA
  does not know that option.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from ltjax.models import conv
    >>> options = conv.xla_cpu_compiler_options()
    >>> step = jax.jit(jnp.sin, compiler_options=options)
    >>> float(step(0.0))
    0.0
  """
  if jax.default_backend() != 'cpu':
    return {}
  if _YNN_FUSION_TYPE in os.environ.get('XLA_FLAGS', ''):
    return {}
  return dict(_CPU_OPTIONS) if _cpu_options_compile() else {}


def _lax_conv(x, kernel, strides, padding, precision):
  return lax.conv_general_dilated(
    x,
    kernel,
    strides,
    padding,
    dimension_numbers=_DIMENSION_NUMBERS,
    precision=precision,
  )


def _cpu_conv(x, kernel, strides, padding, precision):
  # A one that XLA cannot fold: 0 * k is not simplified for floats (NaN).
  one = lax.stop_gradient(1 + 0 * kernel.reshape(-1)[0]).astype(x.dtype)
  return _lax_conv(x / one, kernel, strides, padding, precision)


def conv2d(
  x: jax.Array,
  kernel: jax.Array,
  strides: int | Sequence[int] = 1,
  padding: PaddingLike = 'SAME',
  *,
  precision: lax.PrecisionLike = None,
  impl: str = 'auto',
) -> jax.Array:
  """``lax.conv_general_dilated`` on NHWC inputs and HWIO kernels.

  Args:
    x: ``[batch, height, width, in_features]`` inputs.
    kernel: ``[kh, kw, in_features, out_features]`` filters.
    strides: an int or a pair.
    padding: ``'SAME'``, ``'VALID'``, an int (same on all sides) or a pair of
      ints or ``(low, high)`` pairs per spatial dimension.
    precision: passed to ``lax.conv_general_dilated``.
    impl: ``'lax'`` (plain), ``'cpu'`` (input materialized first, fast to
      differentiate under XLA:CPU; see the module docstring) or ``'auto'``
      (``'cpu'`` on CPU, ``'lax'`` elsewhere). All give the same numbers
      (``'cpu'`` divides by ``1 + 0 * kernel[0, 0, 0, 0]``, so a NaN or
      infinite first kernel entry makes all of its output NaN).

  Returns:
    ``[batch, out_height, out_width, out_features]``.
  """
  if impl not in CONV_IMPLS:
    raise ValueError(f'impl must be one of {CONV_IMPLS}, got {impl!r}.')
  if x.ndim != 4 or kernel.ndim != 4:
    raise ValueError(
      f'conv2d takes NHWC inputs and HWIO kernels, got shapes {x.shape} and '
      f'{kernel.shape}.'
    )
  strides = (strides, strides) if isinstance(strides, int) else tuple(strides)
  padding = nn.linear.canonicalize_padding(padding, 2)
  args = (x, kernel)
  static = (strides, padding, precision)
  if impl == 'lax':
    return _lax_conv(*args, *static)
  if impl == 'cpu':
    return _cpu_conv(*args, *static)
  return lax.platform_dependent(
    *args,
    cpu=lambda x, k: _cpu_conv(x, k, *static),
    default=lambda x, k: _lax_conv(x, k, *static),
  )


class Conv(nn.Module):
  """2D convolution (NHWC), a drop-in for ``flax.linen.Conv``.

  Same parameters (``kernel`` ``[kh, kw, in, features]`` and ``bias``), same
  initializers and dtype promotion as ``nn.Conv``; the computation is
  :func:`conv2d` with the chosen ``impl``.

  Attributes:
    features: output channels.
    kernel_size: ``(kh, kw)`` or an int.
    strides: an int or a pair.
    padding: ``'SAME'``, ``'VALID'``, an int or per-dimension pairs.
    use_bias: add a bias.
    kernel_init: kernel initializer.
    bias_init: bias initializer.
    dtype: computation dtype (None: promoted from inputs and parameters).
    param_dtype: parameter dtype.
    precision: passed to ``lax.conv_general_dilated``.
    conv_impl: ``'auto'``, ``'lax'`` or ``'cpu'``; see :func:`conv2d`.
  """

  features: int
  kernel_size: int | Sequence[int] = (3, 3)
  strides: int | Sequence[int] = 1
  padding: PaddingLike = 'SAME'
  use_bias: bool = True
  kernel_init: Any = nn.linear.default_kernel_init
  bias_init: Any = nn.initializers.zeros
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  precision: lax.PrecisionLike = None
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ks = self.kernel_size
    ks = (ks, ks) if isinstance(ks, int) else tuple(ks)
    kernel = self.param(
      'kernel',
      self.kernel_init,
      (*ks, x.shape[-1], self.features),
      self.param_dtype,
    )
    bias = (
      self.param('bias', self.bias_init, (self.features,), self.param_dtype)
      if self.use_bias
      else None
    )
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = conv2d(
      x,
      kernel,
      self.strides,
      self.padding,
      precision=self.precision,
      impl=self.conv_impl,
    )
    return y if bias is None else y + bias
