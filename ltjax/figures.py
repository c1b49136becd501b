"""PNG figures of a finished run, from its results dict.

:func:`make_figures` builds them (every axis labelled, with units; every
title naming the dataset, imbalance and method, ``results['title']``), and
:func:`write_figures` saves them.
"""

from __future__ import annotations

import os

import numpy as np


def _pyplot():
  # Imported here, once figures are due: the headless backend must be
  # chosen before pyplot loads, and a trainer that is imported but never
  # finishes a run does not pay for matplotlib.
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  return plt


def _heading(results, sep=': ') -> str:
  return f'{results.get("title", results["dataset"])}{sep}{results["method"]}'


def make_figures(results: dict) -> dict:
  """``{file name: matplotlib Figure}``: ``conditional_weights.png`` (runs
  with a meta stage, summed over seeds), ``per_class_accuracy.png`` and
  ``reliability.png`` (the last model of the first seed)."""
  plt = _pyplot()
  out = {}
  counts = np.asarray(results['train_class_counts'])
  classes = np.arange(len(counts))
  heading = _heading(results)
  cw = results['conditional_weights']
  if np.sum(cw['count']) > 0:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.errorbar(
      classes, cw['weight_mean'], yerr=cw['weight_std'], fmt='o', ms=3
    )
    left.set_ylabel('w + ε (mean ± std over the meta stage)')
    # ε against the class weight it corrects: its RMS over the meta stage
    # divided by the mean total weight, on a log scale.
    rms = np.sqrt(np.square(cw['eps_mean']) + np.square(cw['eps_std']))
    ratio = rms / np.maximum(np.abs(cw['weight_mean']), 1e-30)
    right.semilogy(classes, np.maximum(ratio, 1e-12), 'o', ms=3)
    right.set_ylabel('|ε| / w (RMS ε over mean w + ε)')
    for ax in (left, right):
      ax.set_xlabel('class (by training images, most first)')
    fig.suptitle(f'{heading}: conditional weights', fontsize=10)
    fig.tight_layout()
    out['conditional_weights.png'] = fig

  first = results['seeds'][0]
  model = f'last model of seed {first["seed"]}'
  test = first['last']['test']
  acc = [np.nan if a is None else a for a in test['per_class_accuracy']]
  fig, ax = plt.subplots(figsize=(5, 3.6))
  ax.scatter(counts, acc, s=10)
  ax.set_xscale('log')
  ax.set_xlabel('training images of the class (log scale)')
  ax.set_ylabel('test accuracy (%)')
  ax.set_title(f'{_heading(results, chr(10))}, {model}', fontsize=9)
  fig.tight_layout()
  out['per_class_accuracy.png'] = fig

  if 'reliability' in test:
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    reliability_diagram(ax, test['reliability'])
    ax.set_title(
      f'{_heading(results, chr(10))}, {model}, ECE {test["ece"]:.2f}%',
      fontsize=9,
    )
    fig.tight_layout()
    out['reliability.png'] = fig
  return out


def write_figures(results: dict, workdir) -> list[str]:
  """Saves :func:`make_figures` to ``workdir``; returns their paths."""
  plt = _pyplot()
  paths = []
  for name, fig in make_figures(results).items():
    paths.append(os.path.join(workdir, name))
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
  edges = 100 * np.arange(m) / m
  full = [i for i in range(m) if bins['count'][i]]
  acc = np.array([bins['accuracy'][i] for i in full])
  conf = np.array([bins['confidence'][i] for i in full])
  ax.bar(edges[full], acc, width=100 / m, align='edge', edgecolor='k',
         label='accuracy')  # fmt: skip
  ax.bar(edges[full], conf - acc, bottom=acc, width=100 / m, align='edge',
         color='tab:red', alpha=0.3, label='gap to confidence')  # fmt: skip
  ax.plot([0, 100], [0, 100], 'k--', lw=1)
  ax.set_xlim(0, 100)
  ax.set_ylim(0, 100)
  ax.set_xlabel('confidence: top-1 probability (%)')
  ax.set_ylabel('accuracy of the bin (%)')
  ax.legend(loc='upper left', fontsize=8)
