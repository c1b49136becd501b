"""PNG figures of a finished run, from its results dict."""

from __future__ import annotations

import os

import numpy as np


def write_figures(results: dict, workdir) -> list[str]:
  """Writes ``conditional_weights.png`` (for meta runs),
  ``per_class_accuracy.png`` and ``reliability.png`` to ``workdir``; returns
  their paths."""
  # Imported here, once figures are due: the headless backend must be
  # chosen before pyplot loads, and a trainer that is imported but never
  # finishes a run does not pay for matplotlib.
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  paths = []
  counts = np.asarray(results['train_class_counts'])
  classes = np.arange(len(counts))
  cw = results['conditional_weights']
  if np.sum(cw['count']) > 0:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, key, title in (
      (axes[0], 'eps', 'conditional weight ε'),
      (axes[1], 'weight', 'total weight w + ε'),
    ):
      ax.errorbar(
        classes, cw[f'{key}_mean'], yerr=cw[f'{key}_std'], fmt='o', ms=3
      )
      ax.set_xlabel('class (by training-set size, largest first)')
      ax.set_title(f'{title}: mean ± std over the meta stage', fontsize=10)
    fig.tight_layout()
    paths.append(os.path.join(workdir, 'conditional_weights.png'))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

  acc = [
    np.nan if a is None else a
    for a in results['last']['test']['per_class_accuracy']
  ]
  fig, ax = plt.subplots(figsize=(5, 3.5))
  ax.scatter(counts, acc, s=10)
  ax.set_xscale('log')
  ax.set_xlabel('training images of the class')
  ax.set_ylabel('test accuracy (%)')
  ax.set_title(f'{results["dataset"]}, {results["method"]}: last model')
  fig.tight_layout()
  paths.append(os.path.join(workdir, 'per_class_accuracy.png'))
  fig.savefig(paths[-1], dpi=100)
  plt.close(fig)

  test = results['last']['test']
  if 'reliability' in test:
    fig, ax = plt.subplots(figsize=(4, 4))
    reliability_diagram(ax, test['reliability'])
    ax.set_title(
      f'{results["method"]}: last model, ECE {test["ece"]:.2f}%', fontsize=10
    )
    fig.tight_layout()
    paths.append(os.path.join(workdir, 'reliability.png'))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
  return paths


def reliability_diagram(ax, bins: dict) -> None:
  """Accuracy against confidence per bin (Guo et al., ICML 2017), on ``ax``.

  ``bins`` is :func:`ltjax.evaluate.calibration`'s ``'bins'``: bars at each
  non-empty bin's accuracy, the diagonal of perfect calibration, and the
  gap to each bin's mean confidence.
  """
  m = len(bins['count'])
  edges = np.arange(m) / m
  full = [i for i in range(m) if bins['count'][i]]
  acc = np.array([bins['accuracy'][i] for i in full])
  conf = np.array([bins['confidence'][i] for i in full])
  ax.bar(edges[full], acc, width=1 / m, align='edge', edgecolor='k',
         label='accuracy')  # fmt: skip
  ax.bar(edges[full], conf - acc, bottom=acc, width=1 / m, align='edge',
         color='tab:red', alpha=0.3, label='gap to confidence')  # fmt: skip
  ax.plot([0, 1], [0, 1], 'k--', lw=1)
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1)
  ax.set_xlabel('confidence (top-1 probability)')
  ax.set_ylabel('accuracy')
  ax.legend(loc='upper left', fontsize=8)
