"""ResNets: parameter counts, BatchNorm rule, shortcuts, heads and init."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax import models


def num_params(model, image_size):
  shapes = jax.eval_shape(
    lambda k: model.init(k, jnp.zeros((1, image_size, image_size, 3)), False),
    jax.random.key(0),
  )
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes['params']))


def cifar_resnet_count(stage_sizes, widths, num_classes):
  """Closed form: 3x3 convs (no bias), BatchNorm scale+bias, linear head."""
  total = 3 * widths[0] * 9 + 2 * widths[0]
  c_in = widths[0]
  for size, width in zip(stage_sizes, widths, strict=True):
    for _ in range(size):
      total += (c_in * width + width * width) * 9 + 4 * width
      c_in = width
  return total + c_in * num_classes + num_classes


def test_cifar_parameter_counts():
  assert num_params(models.ResNet32(num_classes=10), 32) == 464_154
  assert cifar_resnet_count((5, 5, 5), (16, 32, 64), 10) == 464_154
  assert num_params(models.ResNet32(num_classes=100), 32) == (
    cifar_resnet_count((5, 5, 5), (16, 32, 64), 100)
  )
  assert num_params(models.TinyResNet(num_classes=10), 32) == (
    cifar_resnet_count((1, 1, 1), (4, 8, 16), 10)
  )
  # The cosine head has no bias.
  assert num_params(models.ResNet32(num_classes=10, cosine_head=True), 32) == (
    464_154 - 10
  )


@pytest.mark.parametrize(
  'factory, expected',
  [
    # torchvision: resnet18 has 11,689,512; ResNet-10 drops one basic block
    # per stage, 6,270,720 parameters.
    (models.ResNet10, 11_689_512 - 6_270_720),
    (models.ResNet50, 25_557_032),  # torchvision resnet50
    (models.ResNet152, 60_192_808),  # torchvision resnet152
  ],
)
def test_imagenet_parameter_counts(factory, expected):
  assert num_params(factory(num_classes=1000), 224) == expected


@pytest.mark.parametrize(
  'model, size',
  [
    (models.TinyResNet(num_classes=7), 32),
    (models.TinyResNet(num_classes=7, cosine_head=True), 32),
    (models.ResNet10(num_classes=7, widths=(4, 8, 8, 16)), 64),
    (models.ResNet(num_classes=7, stage_sizes=(1, 1), widths=(4, 8)), 64),
  ],
)
def test_forward_shapes_and_modes(model, size):
  x = jax.random.normal(jax.random.key(0), (4, size, size, 3))
  variables = model.init(jax.random.key(1), x, train=False)
  logits, updates = model.apply(
    variables, x, train=True, mutable=['batch_stats']
  )
  assert logits.shape == (4, 7) and np.all(np.isfinite(logits))
  changed = jax.tree.map(
    lambda a, b: bool(jnp.any(a != b)),
    variables['batch_stats'],
    updates['batch_stats'],
  )
  assert all(jax.tree.leaves(changed))
  eval_logits = model.apply(variables, x, train=False)
  assert eval_logits.shape == (4, 7)


def test_cosine_head_is_cosine_similarity():
  x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
  head = models.CosineHead(3)
  variables = head.init(jax.random.key(0), x)
  w = np.asarray(variables['params']['kernel'])
  expected = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (
    w / np.linalg.norm(w, axis=0, keepdims=True)
  )
  out = head.apply(variables, x)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
  assert np.all(np.abs(out) <= 1 + 1e-6)


@pytest.mark.parametrize('unbiased', [True, False])
def test_batchnorm_matches_closed_form(unbiased):
  rng = np.random.default_rng(0)
  x = rng.normal(2.0, 3.0, size=(6, 4, 4, 5)).astype(np.float32)
  bn = models.BatchNorm(unbiased_running_var=unbiased)
  variables = bn.init(jax.random.key(0), x)
  scale = rng.uniform(0.5, 2, 5).astype(np.float32)
  bias = rng.normal(size=5).astype(np.float32)
  variables = {
    'params': {'scale': scale, 'bias': bias},
    'batch_stats': variables['batch_stats'],
  }
  y, updates = bn.apply(variables, x, mutable=['batch_stats'])
  xs = x.reshape(-1, 5).astype(np.float64)
  mean, var = xs.mean(0), xs.var(0)  # biased, used to normalize
  np.testing.assert_allclose(
    y, (x - mean) / np.sqrt(var + 1e-5) * scale + bias, rtol=1e-4, atol=1e-5
  )
  n = xs.shape[0]
  running_var = var * n / (n - 1) if unbiased else var
  stats = updates['batch_stats']
  np.testing.assert_allclose(stats['mean'], 0.1 * mean, rtol=1e-5)
  np.testing.assert_allclose(stats['var'], 0.9 + 0.1 * running_var, rtol=1e-5)
  # Evaluation mode normalizes with the running statistics.
  eval_bn = models.BatchNorm(use_running_average=True)
  y_eval = eval_bn.apply({**variables, 'batch_stats': stats}, x)
  np.testing.assert_allclose(
    y_eval,
    (x - stats['mean']) / np.sqrt(stats['var'] + 1e-5) * scale + bias,
    rtol=1e-4,
    atol=1e-5,
  )


def test_option_a_shortcut():
  from ltjax.models.cifar_resnet import option_a_shortcut

  x = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype(np.float32)
  out = np.asarray(option_a_shortcut(jnp.asarray(x), 8))
  assert out.shape == (2, 4, 4, 8)
  np.testing.assert_array_equal(out[..., 2:6], x[:, ::2, ::2, :])
  np.testing.assert_array_equal(out[..., :2], 0)
  np.testing.assert_array_equal(out[..., 6:], 0)


def test_kaiming_normal_init():
  variables = models.ResNet32(num_classes=10).init(
    jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False
  )
  kernel = np.asarray(variables['params']['layer3_4']['conv2']['kernel'])
  fan_in = 3 * 3 * 64
  z = kernel / np.sqrt(2 / fan_in)
  assert z.std() == pytest.approx(1.0, abs=0.02)
  # Untruncated normal, as torch.nn.init.kaiming_normal_: some draws lie
  # beyond 2 std (a truncated normal has none).
  assert np.mean(np.abs(z) > 2) == pytest.approx(0.0455, abs=0.01)


def test_make_loss_fn_threads_batch_stats():
  model = models.TinyResNet(num_classes=3)
  x = jax.random.normal(jax.random.key(0), (4, 16, 16, 3))
  variables = model.init(jax.random.key(1), x, train=False)
  loss_fn = models.make_loss_fn(
    model, lambda logits, labels: jax.nn.logsumexp(logits, axis=-1) + labels
  )
  losses, stats = loss_fn(
    variables['params'], variables['batch_stats'], {'image': x, 'label': 2.0}
  )
  logits, updates = model.apply(
    variables, x, train=True, mutable=['batch_stats']
  )
  np.testing.assert_allclose(losses, jax.nn.logsumexp(logits, axis=-1) + 2)
  assert jax.tree.all(
    jax.tree.map(np.array_equal, stats, updates['batch_stats'])
  )
