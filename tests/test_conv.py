"""conv2d / Conv: every formulation equals the plain convolution.

Checked against flax.linen.Conv and an independent NumPy reference (shifted
sums, closed-form input and filter gradients), in float32 and float64, for
the strides and paddings the ResNets use, in reverse and forward mode.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax import models
from ltjax.models import conv

IMPLS = ('lax', 'cpu', 'auto')
# (stride, padding as passed, the same as explicit (low, high) pairs).
CASES = [
  (1, ((1, 1), (1, 1)), ((1, 1), (1, 1))),
  (2, ((1, 1), (1, 1)), ((1, 1), (1, 1))),
  (1, 'SAME', ((1, 1), (1, 1))),
  (2, 'SAME', ((0, 1), (0, 1))),  # XLA's SAME for stride 2, even size
  (2, 'VALID', ((0, 0), (0, 0))),
]


def np_conv(x, k, s, pads):
  """Forward: y[n,i,j,o] = sum_{a,b,c} xp[n, s i + a, s j + b, c] k[a,b,c,o]."""
  xp = np.pad(x, ((0, 0), *pads, (0, 0)))
  kh, kw = k.shape[:2]
  ho = (xp.shape[1] - kh) // s + 1
  wo = (xp.shape[2] - kw) // s + 1
  y = np.zeros((x.shape[0], ho, wo, k.shape[3]), x.dtype)
  for a in range(kh):
    for b in range(kw):
      win = xp[:, a : a + s * (ho - 1) + 1 : s, b : b + s * (wo - 1) + 1 : s]
      y += win @ k[a, b]
  return y


def np_conv_grads(x, k, s, pads, g):
  """Closed-form input and filter gradients of <np_conv(x, k), g>."""
  xp = np.pad(x, ((0, 0), *pads, (0, 0)))
  kh, kw = k.shape[:2]
  ho, wo = g.shape[1:3]
  dxp = np.zeros_like(xp)
  dk = np.zeros_like(k)
  for a in range(kh):
    for b in range(kw):
      rows = slice(a, a + s * (ho - 1) + 1, s)
      cols = slice(b, b + s * (wo - 1) + 1, s)
      dk[a, b] = np.einsum('nijc,nijo->co', xp[:, rows, cols], g)
      dxp[:, rows, cols] += g @ k[a, b].T
  (top, _), (left, _) = pads
  dx = dxp[:, top : top + x.shape[1], left : left + x.shape[2]]
  return dx, dk


def random_problem(dtype, stride, size=8, cin=3, cout=4, batch=2):
  kx, kk, kg = jax.random.split(jax.random.key(stride), 3)
  x = jax.random.normal(kx, (batch, size, size, cin), dtype)
  k = jax.random.normal(kk, (3, 3, cin, cout), dtype)
  ho = (size - 1) // stride + 1
  return x, k, kg, ho


def values_and_grads(fn, x, k, g):
  y, vjp = jax.vjp(fn, x, k)
  return (y, *vjp(g))


def assert_close(actual, desired, rtol):
  for a, d in zip(actual, desired, strict=True):
    a, d = np.asarray(a), np.asarray(d)
    assert a.shape == d.shape
    scale = max(float(np.max(np.abs(d))), 1.0)
    np.testing.assert_allclose(a, d, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('stride, padding, pads', CASES)
def test_float32_equals_flax_conv_and_numpy(impl, stride, padding, pads):
  x, k, kg, ho = random_problem(jnp.float32, stride)
  if padding == 'VALID':
    ho = (x.shape[1] - 3) // stride + 1
  g = jax.random.normal(kg, (x.shape[0], ho, ho, k.shape[3]))

  def ours(x, k):
    return conv.conv2d(x, k, stride, padding, impl=impl)

  def flax_conv(x, k):
    module = nn.Conv(k.shape[3], (3, 3), stride, padding, use_bias=False)
    return module.apply({'params': {'kernel': k}}, x)

  got = jax.jit(lambda x, k, g: values_and_grads(ours, x, k, g))(x, k, g)
  want = values_and_grads(flax_conv, x, k, g)
  assert_close(got, want, 1e-6)
  xn, kn, gn = (np.asarray(v, np.float64) for v in (x, k, g))
  want = (
    np_conv(xn, kn, stride, pads),
    *np_conv_grads(xn, kn, stride, pads, gn),
  )
  assert_close(got, want, 1e-5)


@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('stride, padding, pads', CASES[:2])
def test_float64_equals_numpy(impl, stride, padding, pads):
  with jax.enable_x64(True):
    x, k, kg, ho = random_problem(jnp.float64, stride)
    g = jax.random.normal(kg, (x.shape[0], ho, ho, k.shape[3]), jnp.float64)

    def ours(x, k):
      return conv.conv2d(x, k, stride, padding, impl=impl)

    got = jax.jit(lambda x, k, g: values_and_grads(ours, x, k, g))(x, k, g)
    assert all(v.dtype == jnp.float64 for v in got)
    xn, kn, gn = (np.asarray(v) for v in (x, k, g))
    want = (
      np_conv(xn, kn, stride, pads),
      *np_conv_grads(xn, kn, stride, pads, gn),
    )
    assert_close(got, want, 1e-12)


@pytest.mark.parametrize('impl', ('cpu', 'auto'))
@pytest.mark.parametrize('stride', (1, 2))
def test_forward_mode_and_transpose_equal_lax(impl, stride):
  """jvp, linearize + linear_transpose (as meta_step) and vmap all work."""
  with jax.enable_x64(True):
    x, k, kg, _ = random_problem(jnp.float64, stride)
    dx, dk = (jax.random.normal(kg, v.shape, v.dtype) for v in (x, k))

    def run(impl):
      def f(x, k):
        return conv.conv2d(x, k, stride, 1, impl=impl)

      y, lin = jax.linearize(f, x, k)
      ct = jnp.cos(y)
      return (
        jax.jvp(f, (x, k), (dx, dk))[1],
        lin(dx, dk),
        *jax.linear_transpose(lin, x, k)(ct),
        jax.vmap(f, in_axes=(None, 3), out_axes=3)(x, k[..., None]),
        jax.hessian(lambda k: jnp.sum(jnp.sin(f(x[..., :1], k))))(
          k[:, :, :1, :1]
        ),
      )

    assert_close(jax.jit(run, static_argnums=0)(impl), run('lax'), 1e-12)


def test_auto_is_the_cpu_formulation_on_cpu():
  if jax.default_backend() != 'cpu':
    pytest.skip('checks the CPU lowering')
  x, k, _, _ = random_problem(jnp.float32, 1)

  def lowered(impl):
    return jax.jit(lambda x, k: conv.conv2d(x, k, impl=impl)).lower(x, k)

  assert 'divide' in lowered('auto').as_text()
  assert 'divide' in lowered('cpu').as_text()
  assert 'divide' not in lowered('lax').as_text()


@pytest.mark.parametrize('use_bias', (False, True))
def test_module_matches_flax_conv_parameters_and_outputs(use_bias):
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  kwargs = dict(features=5, kernel_size=(3, 3), strides=2, use_bias=use_bias)
  ours = models.Conv(padding=((1, 1), (1, 1)), conv_impl='cpu', **kwargs)
  ref = nn.Conv(padding=((1, 1), (1, 1)), **kwargs)
  v_ours = ours.init(jax.random.key(1), x)
  v_ref = ref.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, v_ours) == jax.tree.map(jnp.shape, v_ref)
  assert_close(jax.tree.leaves(v_ours), jax.tree.leaves(v_ref), 0)
  assert_close([ours.apply(v_ref, x)], [ref.apply(v_ref, x)], 1e-6)


def test_resnet_conv_impls_agree():
  x = jax.random.normal(jax.random.key(0), (4, 16, 16, 3))
  y = jnp.arange(4) % 3

  def loss_and_grads(impl):
    model = models.TinyResNet(num_classes=3, conv_impl=impl)
    variables = model.init(jax.random.key(1), x, train=False)
    loss_fn = models.make_loss_fn(model, lambda z, y: -z[jnp.arange(4), y])
    batch = {'image': x, 'label': y}

    def loss(p):
      return loss_fn(p, variables['batch_stats'], batch)[0].sum()

    return variables, jax.jit(jax.value_and_grad(loss))(variables['params'])

  v_lax, (l_lax, g_lax) = loss_and_grads('lax')
  v_cpu, (l_cpu, g_cpu) = loss_and_grads('cpu')
  assert jax.tree.structure(v_lax) == jax.tree.structure(v_cpu)
  assert_close(jax.tree.leaves(v_cpu), jax.tree.leaves(v_lax), 0)
  assert_close(
    [l_cpu, *jax.tree.leaves(g_cpu)], [l_lax, *jax.tree.leaves(g_lax)], 1e-5
  )


def test_bad_arguments():
  x = jnp.zeros((1, 4, 4, 2))
  k = jnp.zeros((3, 3, 2, 2))
  with pytest.raises(ValueError, match='impl must be one of'):
    conv.conv2d(x, k, impl='im2col')
  with pytest.raises(ValueError, match='NHWC'):
    conv.conv2d(x[0], k)


def test_xla_cpu_compiler_options():
  options = models.xla_cpu_compiler_options()
  if jax.default_backend() != 'cpu':
    assert options == {}
    return
  x, k, kg, ho = random_problem(jnp.float32, 1, size=6, cin=20, cout=20)
  g = jax.random.normal(kg, (x.shape[0], ho, ho, k.shape[3]))

  def step(x, k, g):
    return values_and_grads(lambda x, k: conv.conv2d(x, k, 1, 1), x, k, g)

  lowered = jax.jit(step).lower(x, k, g)
  got = lowered.compile(options)(x, k, g)
  assert_close(got, lowered.compile()(x, k, g), 1e-5)
  if options:  # the convolutions no longer go to YNNPACK
    assert 'ynn' not in lowered.compile(options).as_text()
