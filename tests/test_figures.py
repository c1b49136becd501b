"""Every figure has labelled axes and a title naming dataset, imbalance and
method; the ε figure shows |ε| / w on a log scale."""

import numpy as np

from ltjax import evaluate, figures


def fake_results(meta=True):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(200, 4))
  labels = np.arange(200) % 4
  test = evaluate.classification_metrics(logits, labels, [50, 20, 8, 3])
  test['reliability'] = evaluate.calibration(logits, labels)['bins']
  count = [30.0, 12.0, 5.0, 2.0] if meta else [0.0] * 4
  return {
    'title': 'CIFAR-10-LT subset, imbalance 100 (npz)',
    'dataset': 'npz',
    'method': 'ours_ce',
    'train_class_counts': [50, 20, 8, 3],
    'seeds': [{'seed': 0, 'last': {'test': test}}],
    'conditional_weights': {
      'count': count,
      'eps_mean': [1e-5, -2e-5, 3e-5, 0.0],
      'eps_std': [1e-5, 1e-5, 2e-5, 1e-6],
      'weight_mean': [0.03, 0.1, 1.0, 4.6],
      'weight_std': [0.0, 0.0, 0.0, 0.0],
    },
  }


def test_figures_have_labelled_axes_and_say_what_run_they_show():
  figs = figures.make_figures(fake_results())
  assert sorted(figs) == [
    'conditional_weights.png',
    'per_class_accuracy.png',
    'reliability.png',
  ]
  for name, fig in figs.items():
    title = fig._suptitle.get_text() if fig._suptitle else ''
    title += ' '.join(ax.get_title() for ax in fig.axes)
    assert 'CIFAR-10-LT subset, imbalance 100' in title and 'ours_ce' in title
    for ax in fig.axes:
      assert ax.get_xlabel() and ax.get_ylabel(), name
  ratio_ax = figs['conditional_weights.png'].axes[1]
  assert ratio_ax.get_yscale() == 'log' and '|ε| / w' in ratio_ax.get_ylabel()
  got = ratio_ax.lines[0].get_ydata()
  rms = np.sqrt(
    np.square([1e-5, -2e-5, 3e-5, 0]) + np.square([1e-5, 1e-5, 2e-5, 1e-6])
  )
  np.testing.assert_allclose(got, rms / [0.03, 0.1, 1.0, 4.6])


def test_runs_without_a_meta_stage_have_no_epsilon_figure():
  assert 'conditional_weights.png' not in figures.make_figures(
    fake_results(False)
  )
