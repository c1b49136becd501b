"""Per-example losses against NumPy implementations written here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ltjax


def np_log_softmax(z):
  z = np.asarray(z, np.float64)
  m = z.max(-1, keepdims=True)
  return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def np_ce(z, y, w=None):
  loss = -np_log_softmax(z)[np.arange(len(y)), y]
  return loss if w is None else loss * np.asarray(w)[y]


def np_focal(z, y, gamma, w=None):
  p = np.exp(np_log_softmax(z))[np.arange(len(y)), y]
  loss = (1 - p) ** gamma * -np.log(p)
  return loss if w is None else loss * np.asarray(w)[y]


def np_ldam(z, y, counts, s=30.0, w=None):
  margins = 1 / np.asarray(counts, np.float64) ** 0.25
  margins *= 0.5 / margins.max()
  z = np.array(z, np.float64)
  z[np.arange(len(y)), y] -= margins[y]
  return np_ce(s * z, y, w)


@pytest.fixture
def data():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(32, 7)) * 3
  y = rng.integers(0, 7, size=32)
  w = rng.uniform(0.2, 3, size=7)
  return z.astype(np.float32), y, w


def test_cross_entropy(data):
  z, y, w = data
  np.testing.assert_allclose(
    ltjax.softmax_cross_entropy(z, y), np_ce(z, y), rtol=1e-5
  )
  np.testing.assert_allclose(
    ltjax.softmax_cross_entropy(z, y, w), np_ce(z, y, w), rtol=1e-5
  )


@pytest.mark.parametrize('gamma', [0.0, 0.5, 1.0, 2.0, 5.0])
def test_focal(data, gamma):
  z, y, w = data
  np.testing.assert_allclose(
    ltjax.focal_loss(z, y, gamma), np_focal(z, y, gamma), rtol=2e-5, atol=1e-7
  )
  np.testing.assert_allclose(
    ltjax.focal_loss(z, y, gamma, w), np_focal(z, y, gamma, w), rtol=2e-5,
    atol=1e-7,
  )  # fmt: skip


def test_focal_gamma_zero_is_cross_entropy(data):
  z, y, _ = data
  np.testing.assert_allclose(
    ltjax.focal_loss(z, y, 0.0), ltjax.softmax_cross_entropy(z, y), rtol=1e-6
  )


def test_ldam(data):
  z, y, w = data
  z = np.tanh(z)  # cosine logits
  counts = [500, 300, 120, 60, 30, 11, 5]
  margins = ltjax.ldam_margins(counts)
  assert margins.max() == pytest.approx(0.5)
  np.testing.assert_allclose(
    ltjax.ldam_loss(z, y, margins), np_ldam(z, y, counts), rtol=1e-5
  )
  np.testing.assert_allclose(
    ltjax.ldam_loss(z, y, margins, class_weights=w),
    np_ldam(z, y, counts, w=w), rtol=1e-5,
  )  # fmt: skip


EXTREME = np.array(
  [[1e4, -1e4, 0.0], [-1e4, 1e4, 3e4], [80.0, 80.0, -80.0], [0.0, 0.0, 0.0]],
  np.float32,
)
EXTREME_Y = np.array([0, 1, 2, 1])

LOSSES = {
  'ce': lambda z, y: ltjax.softmax_cross_entropy(z, y),
  'focal0.5': lambda z, y: ltjax.focal_loss(z, y, 0.5),
  'focal2': lambda z, y: ltjax.focal_loss(z, y, 2.0),
  'ldam': lambda z, y: ltjax.ldam_loss(z, y, ltjax.ldam_margins([9, 3, 1])),
}


@pytest.mark.parametrize('name', sorted(LOSSES))
def test_extreme_logits_are_finite(name):
  fn = LOSSES[name]
  loss = fn(jnp.asarray(EXTREME), jnp.asarray(EXTREME_Y))
  grad = jax.grad(lambda z: fn(z, EXTREME_Y).sum())(jnp.asarray(EXTREME))
  assert np.all(np.isfinite(loss)), loss
  assert np.all(np.isfinite(grad)), grad


def test_extreme_logit_values():
  ce = ltjax.softmax_cross_entropy(EXTREME, EXTREME_Y)
  np.testing.assert_allclose(
    ce, [0.0, 2e4, 160 + np.log(2), np.log(3)], rtol=1e-6
  )
  # Confident and right: focal term -> 0; confident and wrong: -> CE.
  focal = ltjax.focal_loss(EXTREME, EXTREME_Y, 2.0)
  np.testing.assert_allclose(
    focal, [0.0, 2e4, 160 + np.log(2), (2 / 3) ** 2 * np.log(3)], rtol=1e-6
  )


def test_bad_arguments():
  with pytest.raises(ValueError, match='gamma >= 0'):
    ltjax.focal_loss(EXTREME, EXTREME_Y, -1.0)
  with pytest.raises(ValueError, match='positive class counts'):
    ltjax.ldam_margins([5, 0])
