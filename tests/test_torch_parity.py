"""Parity of meta_step with an independent PyTorch version of the official step.

Both sides start from the same weights, see the same batches and run three
meta steps, each followed by the official meta-stage SGD update (momentum 0.9,
Nesterov, weight decay 5e-4, lr 0.001), with BatchNorm in training mode.
"""

import numpy as np
import pytest

torch = pytest.importorskip(
  'torch',
  reason='PyTorch is needed for the parity tests: pip install torch==2.13.0 '
  '(part of the [test] extra).',
)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import ltjax  # noqa: E402
from benchmarks import torch_reference  # noqa: E402
from ltjax import models  # noqa: E402

NUM_CLASSES = 5
CLASS_COUNTS = [80, 40, 16, 7, 3]


def torch_to_flax(state_dict):
  """Maps torch state_dict names (NCHW, [out, in]) to Flax params/stats."""
  params, stats = {}, {}
  for name, value in state_dict.items():
    if name.endswith('num_batches_tracked'):
      continue
    *path, leaf = name.split('.')
    if path[0].startswith('layer'):
      path = [f'{path[0]}_{path[1]}', *path[2:]]
    value = value.detach().cpu().numpy()
    if leaf == 'weight' and value.ndim == 4:
      target, leaf, value = params, 'kernel', value.transpose(2, 3, 1, 0)
    elif leaf == 'weight' and path[-1] == 'linear':
      target, leaf, value = params, 'kernel', value.T
    elif leaf == 'weight':
      target, leaf = params, 'scale'
    elif leaf == 'bias':
      target = params
    else:
      target, leaf = stats, {'running_mean': 'mean', 'running_var': 'var'}[leaf]
    node = target
    for key in path:
      node = node.setdefault(key, {})
    node[leaf] = jnp.asarray(value)
  return params, stats


def rel_err(a, b):
  diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))), a, b)
  scales = jax.tree.map(lambda y: float(np.max(np.abs(y))), b)
  return max(jax.tree.leaves(diffs)) / max(jax.tree.leaves(scales))


def make_batches(steps, size, dev_size, image, dtype):
  rng = np.random.default_rng(0)
  out = []
  for _ in range(steps):
    out.append(
      (
        rng.normal(size=(size, image, image, 3)).astype(dtype),
        rng.integers(0, NUM_CLASSES, size=size),
        rng.normal(size=(dev_size, image, image, 3)).astype(dtype),
        rng.integers(0, NUM_CLASSES, size=dev_size),
      )
    )
  return out


def run_both(
  dtype, stage_sizes, widths, reduction='sum', lr=0.001, steps=3,
  model_kwargs=None, image=16,
):  # fmt: skip
  torch.manual_seed(0)
  tdtype = {'float64': torch.float64, 'float32': torch.float32}[dtype]
  net = torch_reference.CifarResNet(stage_sizes, widths, NUM_CLASSES).to(tdtype)
  with torch.no_grad():  # Non-trivial BatchNorm affine parameters.
    for module in net.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.2, 0.2)
  params, stats = torch_to_flax(net.state_dict())
  params0 = params
  optimizer = torch_reference.make_sgd(net, lr)
  class_weights = ltjax.class_balanced_weights(CLASS_COUNTS)

  # Library defaults unless the test overrides them: the default must be the
  # official BatchNorm behaviour.
  model = models.CifarResNet(
    NUM_CLASSES, stage_sizes, widths, **(model_kwargs or {})
  )
  loss_fn = models.make_loss_fn(model, ltjax.softmax_cross_entropy)
  opt = optax.chain(
    optax.add_decayed_weights(5e-4),
    optax.sgd(lr, momentum=0.9, nesterov=True),
  )
  opt_state = opt.init(params)

  @jax.jit
  def jax_step(params, stats, opt_state, batch, dev):
    w = jnp.asarray(class_weights, params['linear']['kernel'].dtype)
    out = ltjax.meta_step(
      loss_fn, params, stats, batch, dev, w[batch['label']], inner_lr=lr,
      reduction=reduction,
    )  # fmt: skip
    updates, opt_state = opt.update(out.grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, out

  records = []
  for x, y, xd, yd in make_batches(steps, 16, 12, image, dtype):
    ref = torch_reference.official_meta_step(
      net, optimizer, torch.from_numpy(x.transpose(0, 3, 1, 2)),
      torch.from_numpy(y), torch.from_numpy(xd.transpose(0, 3, 1, 2)),
      torch.from_numpy(yd), torch.from_numpy(class_weights), inner_lr=lr,
      reduction=reduction,
    )  # fmt: skip
    params, opt_state, out = jax_step(
      params, stats, opt_state, {'image': x, 'label': y},
      {'image': xd, 'label': yd},
    )  # fmt: skip
    stats = out.model_state
    ref_params, ref_stats = torch_to_flax(net.state_dict())
    records.append(
      {
        'eps': rel_err(out.eps, ref['eps'].numpy()),
        'dev_loss': rel_err(out.dev_loss, ref['dev_loss'].numpy()),
        'train_loss': rel_err(out.train_loss, ref['train_loss'].numpy()),
        'params': rel_err(params, ref_params),
        # The change from the start: far more sensitive than the parameters.
        'updates': rel_err(
          jax.tree.map(jnp.subtract, params, params0),
          jax.tree.map(jnp.subtract, ref_params, params0),
        ),
        'batch_stats': rel_err(stats, ref_stats),
        'eps_scale': float(np.max(np.abs(ref['eps'].numpy()))),
      }
    )
  return records


@pytest.mark.parametrize(
  'stage_sizes, widths, reduction',
  [
    ((1, 1, 1), (4, 8, 16), 'sum'),
    ((1, 1, 1), (4, 8, 16), 'mean'),
    ((5, 5, 5), (16, 32, 64), 'sum'),  # ResNet-32
  ],
)
def test_float64_parity(stage_sizes, widths, reduction):
  with jax.enable_x64(True):
    records = run_both('float64', stage_sizes, widths, reduction)
  for step, r in enumerate(records):
    assert r['eps_scale'] > 0, r
    for key in (
      'eps',
      'dev_loss',
      'train_loss',
      'params',
      'updates',
      'batch_stats',
    ):
      assert r[key] < 1e-10, (step, key, r)


def test_float32_parity():
  records = run_both('float32', (1, 1, 1), (4, 8, 16))
  for step, r in enumerate(records):
    assert r['eps'] < 1e-2, (step, r)
    assert r['params'] < 1e-5, (step, r)
    assert r['updates'] < 1e-3, (step, r)
    assert r['batch_stats'] < 1e-5, (step, r)


def test_running_variance_rule_matters():
  """Flax's biased running variance is measurably off the official code's."""
  with jax.enable_x64(True):
    biased = run_both(
      'float64', (1, 1, 1), (4, 8, 16), steps=1,
      model_kwargs={'unbiased_running_var': False},
    )  # fmt: skip
  assert biased[0]['batch_stats'] > 1e-4, biased
