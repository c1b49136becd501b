"""The methods after the paper's tables, against independent computations:
logit adjustment and Balanced Softmax (NumPy), τ-normalization and post-hoc
logit adjustment (closed forms), cRT and LWS (one step written out with
``jax.grad``; the frozen backbone bit for bit), the class samplers (binomial
bounds), and each method through the trainer, resumed across its stage 2
start."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ltjax
from ltjax import evaluate, methods, train, train_step
from ltjax.checkpoint import load_numpy
from ltjax.data import device_pipeline
from tests.test_methods import COUNTS, assert_trees_close, enter, setup
from tests.test_seeds import tiny_config

LOGITS = np.array(
  [
    [2.0, -1.0, 0.5, 0.0],
    [-3.0, 4.0, 1.0, 2.0],
    [1e4, -1e4, 0.0, 5e3],  # extreme: the softmax saturates
    [-3e4, 2e4, 2e4, -1.0],
  ],
  np.float32,
)
LABELS = np.array([0, 3, 1, 2])


def np_ce(z, labels):
  """``-log softmax(z)_y`` in float64, written out."""
  z = np.asarray(z, np.float64)
  m = z.max(-1, keepdims=True)
  log_sm = z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))
  return -log_sm[np.arange(len(labels)), labels]


@pytest.mark.parametrize('tau', [0.0, 1.0, 2.5])
def test_logit_adjusted_loss_against_numpy(tau):
  log_prior = np.log(COUNTS / COUNTS.sum())
  got = ltjax.logit_adjusted_loss(
    jnp.asarray(LOGITS), jnp.asarray(LABELS), log_prior, tau=tau
  )
  want = np_ce(LOGITS.astype(np.float64) + tau * log_prior, LABELS)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=2e-3)
  grads = jax.grad(
    lambda z: ltjax.logit_adjusted_loss(z, LABELS, log_prior, tau=tau).sum()
  )(jnp.asarray(LOGITS))
  assert np.all(np.isfinite(grads))


def test_balanced_softmax_against_numpy_and_logit_adjustment():
  w = np.array([0.5, 1.0, 2.0, 4.0])
  got = ltjax.balanced_softmax_loss(
    jnp.asarray(LOGITS), jnp.asarray(LABELS), COUNTS, class_weights=w
  )
  want = w[LABELS] * np_ce(LOGITS.astype(np.float64) + np.log(COUNTS), LABELS)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=2e-3)
  # Ren et al.'s loss is logit adjustment at τ = 1: the shifts differ by a
  # constant. On the moderate logits they agree to float32 rounding.
  la = ltjax.logit_adjusted_loss(
    LOGITS[:2], LABELS[:2], ltjax.log_class_prior(COUNTS), class_weights=w
  )
  np.testing.assert_allclose(got[:2], la, rtol=1e-6)


def test_bad_class_counts_are_refused():
  with pytest.raises(ValueError, match='positive class counts'):
    ltjax.balanced_softmax_loss(LOGITS, LABELS, [3, 0, 1, 1])
  with pytest.raises(ValueError, match='positive class counts'):
    ltjax.log_class_prior([[1, 2]])


def random_head(seed=0, n=6, d=5, c=4):
  rng = np.random.default_rng(seed)
  f = rng.normal(size=(n, d))
  head = {
    'kernel': rng.normal(size=(d, c)) * [0.2, 1.0, 3.0, 0.5],
    'bias': rng.normal(size=c),
  }
  return f, head, f @ head['kernel'] + head['bias']


def test_tau_norm_is_the_identity_at_zero_and_normalizes_the_weights():
  f, head, z = random_head()
  np.testing.assert_array_equal(methods.tau_normalized(z, head, COUNTS, 0.0), z)
  for tau in (0.5, 1.0, 2.0):
    norms = np.linalg.norm(head['kernel'], axis=0)
    want = f @ (head['kernel'] / norms**tau) + head['bias']
    np.testing.assert_allclose(
      methods.tau_normalized(z, head, COUNTS, tau), want, rtol=1e-12
    )
  # τ = 1 with no bias: every class weight of unit norm.
  no_bias = {'kernel': head['kernel']}
  unit = f @ (head['kernel'] / np.linalg.norm(head['kernel'], axis=0))
  np.testing.assert_allclose(
    methods.tau_normalized(f @ head['kernel'], no_bias, COUNTS, 1.0), unit
  )


def test_posthoc_logit_adjustment_against_numpy():
  _, head, z = random_head()
  got = methods.logit_adjusted(z, head, COUNTS, 1.5)
  np.testing.assert_allclose(got, z - 1.5 * np.log(COUNTS / COUNTS.sum()))


def test_the_dev_set_chooses_tau_never_the_test_set():
  # Class 0 is frequent: τ > 0 takes mass away from it. On dev, the true
  # classes are the rare ones, so a large τ wins; on test, τ = 0 would.
  counts = np.array([1000, 10])
  spec = methods.POSTHOC['logit_adjust']
  dev = np.array([[[1.0, 0.0], [1.0, 0.0]]]), np.array([1, 1])
  test = np.array([[[1.0, 0.0], [1.0, 0.0]]]), np.array([0, 0])
  adjust = evaluate.Posthoc(
    spec.adjust, spec.taus, {'kernel': np.zeros((1, 1, 2))}
  )
  (record,) = evaluate.eval_records(5, 1, test, dev, counts, posthoc=adjust)
  # log(1000/1010) - log(10/1010) = log 100: τ > 1/log 100 = 0.217 flips it.
  assert record['posthoc_tau'] == 0.25 and record['dev_top1_error'] == 0.0
  assert record['test']['top1_error'] == 100.0  # judged at the dev's τ


# --- cRT and LWS: one step against its definition ------------------------------


def head_step(config, head, grads, lr):
  """One SGD step (momentum 0.9, Nesterov, coupled weight decay) from a
  fresh optimizer state, on the classifier alone."""
  opt = optax.chain(
    optax.add_decayed_weights(config.weight_decay),
    optax.sgd(lr, momentum=0.9, nesterov=True),
  )
  updates, _ = opt.update(grads, opt.init(head), head)
  return optax.apply_updates(head, updates)


def eval_logits(model, params, batch_stats, images):
  return model.apply(
    {'params': params, 'batch_stats': batch_stats}, images, train=False
  )


def frozen_parts_identical(before, after, trained):
  for key in before.params:
    if key != trained:
      jax.tree.map(
        np.testing.assert_array_equal, before.params[key], after.params[key]
      )
  jax.tree.map(
    np.testing.assert_array_equal, before.batch_stats, after.batch_stats
  )


def test_crt_retrains_a_fresh_classifier_on_a_frozen_backbone():
  config, model, state, batch, dev = setup('crt')
  entered = enter('crt', config, model, state)
  fresh = model.init(jax.random.key(5), jnp.zeros((1, 8, 8, 3)), train=False)
  assert_trees_close(
    entered.params['linear'], fresh['params']['linear'], rtol=0
  )
  assert not np.allclose(
    entered.params['linear']['kernel'], state.params['linear']['kernel']
  )
  update = jax.jit(
    train_step.make_update_fn(
      'crt', model, methods.get_method('crt'), config, COUNTS, 10
    )
  )
  new, metrics = update(entered, batch, dev)

  def loss(head):
    params = {**entered.params, 'linear': head}
    z = eval_logits(model, params, entered.batch_stats, batch['image'])
    return jnp.mean(ltjax.softmax_cross_entropy(z, batch['label']))

  value, grads = jax.value_and_grad(loss)(entered.params['linear'])
  np.testing.assert_allclose(metrics['train/loss'], value, rtol=1e-6)
  assert float(metrics['learning_rate']) == pytest.approx(config.classifier_lr)
  want = head_step(
    config, entered.params['linear'], grads, config.classifier_lr
  )
  assert_trees_close(new.params['linear'], want, rtol=2e-5, atol=1e-7)
  for _ in range(3):
    new, _ = update(new, batch, dev)
  frozen_parts_identical(entered, new, 'linear')


def test_lws_learns_only_a_per_class_scale_of_the_logits():
  config, model, state, batch, dev = setup('lws')
  entered = enter('lws', config, model, state)
  np.testing.assert_array_equal(entered.params['class_scale'], np.ones(4))
  update = jax.jit(
    train_step.make_update_fn(
      'lws', model, methods.get_method('lws'), config, COUNTS, 10
    )
  )
  new, metrics = update(entered, batch, dev)
  z = eval_logits(model, state.params, state.batch_stats, batch['image'])

  def loss(scale):
    return jnp.mean(ltjax.softmax_cross_entropy(z * scale, batch['label']))

  value, grads = jax.value_and_grad(loss)(jnp.ones(4))
  np.testing.assert_allclose(metrics['train/loss'], value, rtol=1e-6)
  want = head_step(config, jnp.ones(4), grads, config.classifier_lr)
  np.testing.assert_allclose(new.params['class_scale'], want, rtol=2e-5)
  assert np.any(np.asarray(new.params['class_scale']) != 1)
  for _ in range(3):
    new, _ = update(new, batch, dev)
  frozen_parts_identical(entered, new, 'class_scale')


# --- Samplers -----------------------------------------------------------------


@pytest.mark.parametrize(
  'sampler, power', [('class', 0.0), ('sqrt', 0.5), ('instance', 1.0)]
)
def test_sampler_class_frequencies_within_a_binomial_bound(sampler, power):
  counts = np.array([400, 100, 40, 10, 2])
  labels = np.repeat(np.arange(5), counts)
  p = device_pipeline.sampling_probabilities(labels, sampler)
  target = counts**power / np.sum(counts**power)
  np.testing.assert_allclose(np.bincount(labels, weights=p), target, rtol=1e-12)
  key, steps, batch = jax.random.key(3), 400, 100
  draw = jax.jit(
    jax.vmap(
      lambda s: device_pipeline.sampled_batch_indices(
        key, s, jnp.asarray(p, jnp.float32), batch
      )
    )
  )
  idx = np.asarray(draw(jnp.arange(steps)))
  n = steps * batch
  seen = np.bincount(labels[idx.ravel()], minlength=5)
  bound = 4.5 * np.sqrt(n * target * (1 - target))  # ~1 in 150,000 per class
  assert np.all(np.abs(seen - n * target) <= bound), (seen, n * target)
  # A pure function of (key, step): the same batch again, another at step+1.
  np.testing.assert_array_equal(draw(jnp.arange(2))[1], idx[1])
  assert np.any(idx[0] != idx[1])


# --- Through the trainer ----------------------------------------------------------

NEW_METHODS = ('crt', 'lws', 'tau_norm', 'la_posthoc', 'la', 'bs', 'ours_la')


def array_config(data_dir, method):
  config = tiny_config(data_dir, method)
  config.num_epochs, config.stage2_epoch = 3, 2
  config.lr_boundaries = (2,)
  config.eval_every_epochs = 1
  config.checkpoint_every_steps = 1
  config.keep_checkpoints = 100
  return config


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Each new method trained once: ``{method: (config, workdir, results)}``."""
  data_dir = tmp_path_factory.mktemp('data')
  out = {}
  for method in NEW_METHODS:
    config = array_config(data_dir, method)
    workdir = tmp_path_factory.mktemp(method)
    out[method] = (
      config,
      workdir,
      train.train_and_evaluate(config, str(workdir)),
    )
  return out


@pytest.mark.parametrize('method', NEW_METHODS)
def test_every_new_method_trains_both_stages(runs, method):
  config, workdir, results = runs[method]
  spe = results['steps'] // config.num_epochs
  test = results['seeds'][0]['last']['test']
  assert 0 <= test['top1_error'] <= 100 and np.isfinite(test['ece'])
  posthoc = methods.get_method(method).posthoc
  if posthoc:
    assert results['seeds'][0]['last']['posthoc_tau'] in methods.POSTHOC[posthoc].taus
  _, final = load_numpy(workdir)
  _, stage1_end = load_numpy(workdir, step=config.stage2_epoch * spe)
  if method == 'crt':  # the backbone and its statistics, bit for bit
    for key in final['params']:
      if key != 'linear':
        jax.tree.map(
          np.testing.assert_array_equal,
          final['params'][key],
          stage1_end['params'][key],
        )
    jax.tree.map(
      np.testing.assert_array_equal,
      final['batch_stats'],
      stage1_end['batch_stats'],
    )
  if method == 'lws':
    jax.tree.map(
      np.testing.assert_array_equal,
      final['params']['linear'],
      stage1_end['params']['linear'],
    )
    assert final['params']['class_scale'].shape == (1, 6)  # seed axis, classes


@pytest.mark.parametrize('method, cut', [('crt', 0), ('lws', 2)])
def test_a_resume_across_the_stage_start_is_bit_identical(
  runs, tmp_path, method, cut
):
  """Checkpoints after stage 2's first step + ``cut`` removed: the run
  resumes (re-entering stage 2 when ``cut`` is 0) to the same end."""
  config, workdir, results = runs[method]
  spe = results['steps'] // config.num_epochs
  keep = config.stage2_epoch * spe + cut
  copy = tmp_path / 'run'
  shutil.copytree(workdir, copy)
  for d in (copy / 'checkpoints').iterdir():
    if d.name.isdigit() and int(d.name) > keep:
      shutil.rmtree(d)
  (copy / 'results.json').unlink()
  again = train.train_and_evaluate(config, str(copy))
  assert again.pop('run')['resumed_from_step'] == keep
  assert again == {k: v for k, v in results.items() if k != 'run'}
  jax.tree.map(
    np.testing.assert_array_equal, load_numpy(copy)[1], load_numpy(workdir)[1]
  )


@pytest.mark.parametrize('name', ['la', 'bs'])
def test_plain_stage_of_the_prior_shifted_losses(name):
  """One ``plain`` update of ``la`` and ``bs`` against ``jax.grad`` of the
  mean loss written with the public loss functions."""
  config, model, state, batch, dev = setup(name)
  update = train_step.make_update_fn(
    'plain', model, methods.get_method(name), config, COUNTS, 10
  )
  new, metrics = jax.jit(update)(state, batch, dev)

  def per_example(z, y):
    if name == 'la':
      return ltjax.logit_adjusted_loss(z, y, ltjax.log_class_prior(COUNTS))
    return ltjax.balanced_softmax_loss(z, y, COUNTS)

  loss_fn = ltjax.models.make_loss_fn(model, per_example)

  def loss(p):
    return jnp.mean(loss_fn(p, state.batch_stats, batch)[0])

  value, grads = jax.value_and_grad(loss)(state.params)
  np.testing.assert_allclose(metrics['train/loss'], value, rtol=1e-6)
  want = head_step(config, state.params, grads, 0.1)
  assert_trees_close(new.params, want, rtol=2e-5, atol=1e-7)


def test_ours_stage_on_the_logit_adjusted_loss():
  config, model, state, batch, dev = setup('ours_la')
  update = train_step.make_update_fn(
    'ours', model, methods.get_method('ours_la'), config, COUNTS, 10
  )
  new, _ = jax.jit(update)(state, batch, dev)
  loss_fn = ltjax.models.make_loss_fn(
    model,
    lambda z, y: ltjax.logit_adjusted_loss(z, y, ltjax.log_class_prior(COUNTS)),
  )
  w = jnp.asarray(ltjax.class_balanced_weights(COUNTS), jnp.float32)
  out = ltjax.meta_step(
    loss_fn, state.params, state.batch_stats, batch, dev,
    w[batch['label']], inner_lr=0.1, eps_lr=0.01,
  )  # fmt: skip
  want = head_step(config, state.params, out.grads, 0.1)
  assert_trees_close(new.params, want, rtol=2e-5, atol=1e-7)
