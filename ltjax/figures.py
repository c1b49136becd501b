"""PNG figures of a finished run, from its results dict."""

from __future__ import annotations

import os

import numpy as np


def write_figures(results: dict, workdir) -> list[str]:
  """Writes ``conditional_weights.png`` (for meta runs) and
  ``per_class_accuracy.png`` to ``workdir``; returns their paths."""
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
  return paths
