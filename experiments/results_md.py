"""RESULTS.md and its figures, from the per-run summaries of
``experiments/reproduce.py`` alone (``results/imb<IF>/<run>.json``).

``python -m experiments.reproduce --summarize`` calls :func:`write`; the
text is a function of the summaries, so regenerating it from the same files
gives the same RESULTS.md.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os

import numpy as np

from benchmarks import cli
from experiments.grid import GRIDS

FIGURE_METHODS = ('ce', 'cb_ce', 'ours_ce')


def load(results_dir) -> list[dict]:
  paths = sorted(glob.glob(os.path.join(results_dir, 'imb*', '*.json')))
  out = []
  for path in paths:
    with open(path) as f:
      out.append(json.load(f))
  return out


def _seed_ids(summary) -> list[str]:
  """``'1'``: the run of seed 1; ``'0.1'``: vectorized seed 1 of
  ``config.seed = 0`` (``fold_in``). Equal ids share their stage 1."""
  seed = summary.get('seed', 0)
  if summary['num_seeds'] == 1:
    return [str(seed)]
  return [f'{seed}.{i}' for i in range(summary['num_seeds'])]


def _label(summary) -> str:
  return summary['method'] + ''.join(
    f'_{k}={v:g}' if isinstance(v, float) else f'_{k}={v}'
    for k, v in summary['overrides'].items()
  )


def _processor(summary) -> str:
  """The run's machine without its date: XLA's CPU code, and so its
  float rounding, differs between processors, so two runs share a stage 1
  bit for bit only on the same kind."""
  return summary.get('machine', '').split('; ', 1)[-1]


def merge(runs) -> list[dict]:
  """One entry per (method, overrides): the seeds of its runs pooled (each
  with its ``id``), ε and weight statistics averaged over runs."""
  groups = {}
  for s in sorted(runs, key=lambda s: s['name']):
    groups.setdefault(_label(s), []).append(s)
  out = []
  for label, members in groups.items():
    g = dict(members[0], label=label, runs=[s['name'] for s in members])
    g['seeds'] = [
      dict(r, id=i, processor=_processor(s))
      for s in members
      for i, r in zip(_seed_ids(s), s['seeds'], strict=True)
    ]
    g['num_seeds'] = len(g['seeds'])
    for k in ('eps_mean', 'weight_mean'):
      g[k] = np.mean([s[k] for s in members], axis=0).tolist()
    rms = np.sqrt(np.mean([np.square(s['eps_rms']) for s in members], axis=0))
    g['eps_rms'] = rms.tolist()
    out.append(g)
  return out


def _values(summary, which, key):
  return [s[which][key] for s in summary['seeds']]


def _mean_std(values, digits=2) -> str:
  if any(v is None for v in values):
    return '–'
  v = np.asarray(values, np.float64)
  if len(v) == 1:
    return f'{v[0]:.{digits}f}'
  return f'{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}'


def _method_key(s):
  """Rows in the order of ``ltjax.methods.METHODS``."""
  from ltjax.methods import METHODS

  order = list(METHODS)
  return order.index(s['method']) if s['method'] in order else 99, s['name']


def _main_table(runs, imbalance, paper) -> list[str]:
  rows = [
    '| method | seeds | test error, last | test error, dev-selected | '
    'many / medium / few acc. (last) | ECE (last) | paper, full CIFAR-10-LT |',
    '|---|---:|---:|---:|---|---:|---:|',
  ]
  for s in sorted(runs, key=_method_key):
    groups = ' / '.join(
      _mean_std(_values(s, 'last', f'{g}_shot_accuracy'), 1)
      for g in ('many', 'medium', 'few')
    )
    ref = paper.get(s['method'], {}).get(imbalance)
    rows.append(
      f'| {s["method"]} | {s["num_seeds"]} | '
      f'{_mean_std(_values(s, "last", "top1_error"))} | '
      f'{_mean_std(_values(s, "dev_selected", "top1_error"))} | {groups} | '
      f'{_mean_std(_values(s, "last", "ece"))} | '
      f'{"–" if ref is None else f"{ref:.2f}"} |'
    )
  return rows


# (a, b, what differs): a − b on the seeds both ran, on the same stage 1.
PAIRS = (
  ('ours_ce', 'cb_finetune',
   'the same stage 1, then class weights with and without the '
   'meta-learned ε'),
  ('ours_ce_eps_lr=100', 'ours_ce',
   'the same stage 1, then ε meta-learned at τ = 100 and at the official '
   'τ = 0.01'),
  ('crt', 'ce', 'the same stage 1, then a re-initialized classifier '
   'retrained on class-balanced batches, against plain training'),
  ('lws', 'ce', 'the same stage 1, then learned per-class logit scales, '
   'against plain training'),
  ('tau_norm', 'ce', 'the same CE model, with and without τ-normalization'),
  ('la_posthoc', 'ce',
   'the same CE model, with and without post-hoc logit adjustment'),
  ('ours_la', 'la', 'the same logit-adjusted stage 1, then class weights '
   'plus the meta-learned ε, against plain logit-adjusted training'),
)  # fmt: skip


def _same_stage1(r, q) -> bool:
  """Whether two seeds' records continued one stage 1: their stage-1
  evaluations agree (``stage1``, from :func:`reproduce.stage1_evals`). Two
  summaries older than that record are taken at their processor; one old
  and one new cannot be checked, and are not paired."""
  if 'stage1' in r and 'stage1' in q:
    return r['stage1'] == q['stage1']
  if 'stage1' in r or 'stage1' in q:
    return False
  return r['processor'] == q['processor']


def _paired(groups, a_label='ours_ce', b_label='cb_finetune', what=None):
  """``a − b`` test error per seed whose two runs continued the same stage 1
  (:func:`_same_stage1`), with mean ± std; the seeds left out are named."""
  by = {s['label']: s for s in groups}
  if not {a_label, b_label} <= set(by):
    return []
  what = what or dict((x, w) for x, _, w in PAIRS)[a_label]
  a, b = by[a_label], by[b_label]
  other = {q['id']: q for q in b['seeds']}
  common = [r for r in a['seeds'] if r['id'] in other]
  ids = [r['id'] for r in common if _same_stage1(r, other[r['id']])]
  apart = [r['id'] for r in common if r['id'] not in ids]
  note = []
  if apart:
    note = [
      '',
      f'{a_label} − {b_label} is not paired on seed'
      f'{"s" * (len(apart) > 1)} {", ".join(apart)}: '
      'the two runs continued different stage-1 runs (trained on another '
      'processor, or by code that rounds differently).',
    ]
  if not ids:
    return note
  out = [
    '',
    f'{a_label} − {b_label} on the same seeds ({what}), test error in '
    f'points, seeds {", ".join(ids)}:',
    '',
    '| model | per seed | mean ± std |',
    '|---|---|---:|',
  ]
  for which in ('last', 'dev_selected'):
    d = np.subtract(*(
      [{r['id']: r for r in x['seeds']}[i][which]['top1_error'] for i in ids]
      for x in (a, b)
    ))  # fmt: skip
    per = ', '.join(f'{x:+.2f}' for x in d)
    out.append(f'| {which} | {per} | {_mean_std(d)} |')
  return out + note


def _tau(s) -> float:
  return float(s['overrides'].get('eps_lr', 0.01))


def _eps_table(runs) -> list[str]:
  ours = [s for s in runs if s['method'] == 'ours_ce']
  if len(ours) < 2:
    return []
  ours.sort(
    key=lambda s: (s['overrides'].get('inner_reduction', 'sum'), _tau(s))
  )
  best = min(
    ours, key=lambda s: np.mean(_values(s, 'dev_selected', 'dev_top1_error'))
  )
  out = [
    '',
    'ours_ce as τ (`eps_lr`) and the inner reduction vary; the row marked '
    '**chosen** has the lowest dev error (the dev-selected model, mean over '
    'seeds), the only criterion used to choose. |ε|/w: per class, the RMS '
    'of ε over the meta stage divided by the mean weight w + ε; the median '
    'and the largest over classes.',
    '',
    '| τ | inner reduction | seeds | dev error | test error, dev-selected | '
    'test error, last | median |ε|/w | max |ε|/w | |',
    '|---:|---|---:|---:|---:|---:|---:|---:|---|',
  ]
  for s in ours:
    ratio = np.asarray(s['eps_rms']) / np.abs(np.asarray(s['weight_mean']))
    out.append(
      f'| {_tau(s):g} | {s["overrides"].get("inner_reduction", "sum")} | '
      f'{s["num_seeds"]} | '
      f'{_mean_std(_values(s, "dev_selected", "dev_top1_error"))} | '
      f'{_mean_std(_values(s, "dev_selected", "top1_error"))} | '
      f'{_mean_std(_values(s, "last", "top1_error"))} | '
      f'{np.median(ratio):.2e} | {ratio.max():.2e} | '
      f'{"**chosen**" if s is best else ""} |'
    )
  return out


def _figures(runs, imbalance, figures_dir, rel) -> list[str]:
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  plain = {s['method']: s for s in runs if not s['overrides']}
  shown = [m for m in FIGURE_METHODS if m in plain]
  if not shown:
    return []
  os.makedirs(figures_dir, exist_ok=True)
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  counts = plain[shown[0]]['train_class_counts']
  classes = np.arange(len(counts))
  for m in shown:
    acc = np.mean(
      [
        [np.nan if a is None else a for a in r['last']['per_class_accuracy']]
        for r in plain[m]['seeds']
      ],
      axis=0,
    )
    axes[0].plot(classes, acc, 'o-', ms=3, label=m)
  axes[0].set_xlabel('class (training images: ' + ', '.join(map(str, counts))
                     + ')', fontsize=7)  # fmt: skip
  axes[0].set_ylabel('test accuracy (%), last model')
  axes[0].legend(fontsize=8)
  for s in sorted(
    (s for s in runs if s['method'] == 'ours_ce'), key=lambda s: s['label']
  ):
    axes[1].plot(classes, s['eps_mean'], 'o-', ms=3, label=s['label'])
  axes[1].set_yscale('symlog', linthresh=1e-6)
  axes[1].set_xlabel('class')
  axes[1].set_ylabel('mean ε over the meta stage')
  if axes[1].lines:
    axes[1].legend(fontsize=6)
  fig.suptitle(f'CIFAR-10-LT subset, imbalance {imbalance}', fontsize=10)
  fig.tight_layout()
  name = f'imb{imbalance}_per_class.png'
  fig.savefig(os.path.join(figures_dir, name), dpi=100, metadata={
    'Software': None})  # fmt: skip
  plt.close(fig)
  return ['', f'![per-class accuracy and ε]({rel}/{name})']


def _protocol(runs) -> list[str]:
  s = runs[0]
  c = s['schedule']
  machines = sorted({_processor(r) for r in runs})
  commits = sorted({r['commit'][:12] for r in runs})
  drops = ' and '.join(str(b) for b in c['lr_boundaries'])
  return [
    f'Data: {s["test_per_class"]} test and {s["dev_per_class"]} dev images '
    f'per class held out; the pool left per class, '
    f'{s["pool_class_counts"]}, is subsampled to the training set: '
    f'{s["data"]} (split sha256 {s["split_sha256"][:12]}), per class '
    f'{s["train_class_counts"]}.',
    '',
    f'Schedule: model {c["model"]}, SGD (momentum 0.9, Nesterov, weight '
    f'decay 5e-4), lr {c["learning_rate"]:g} × {c["lr_decay"]:g} at epochs '
    f'{drops}, batch {c["batch_size"]}, dev batch {c["dev_batch_size"]}, '
    f'{c["num_epochs"]} epochs, stage 2 (the re-weighting or meta stage of '
    f'each method) from epoch {c["stage2_epoch"]}; LDAM methods warm up '
    'the lr over 5 epochs. Evaluated every '
    f'{c["eval_every_epochs"]} epochs; "dev-selected" is the evaluation '
    'with the lowest dev error: the test split chooses nothing.',
    '',
    f'Commits: {", ".join(commits)}. Machines: {"; ".join(machines)}.',
  ]


def render(
  summaries, paper, figures_dir, rel='results/figures', pending=()
) -> str:
  lines = [
    '# Results on the real offline CIFAR-10 images',
    '',
    'These are results on a 5,085-image subset of CIFAR-10 (the first 1,017 '
    'images of each training batch), not on the full dataset: 100 images '
    'per class are held out as the balanced test set and 10 per class as '
    'the dev set, and the long-tailed training set is subsampled from the '
    "rest. The paper's numbers (full CIFAR-10-LT, 50,000 images) are beside "
    'them for orientation only: a different data size, not a target.',
    '',
    'Generated by `python -m experiments.reproduce --summarize` from '
    '`results/imb*/*.json`; the grid itself: '
    '`python -m experiments.reproduce --data_dir=DATA_DIR '
    "--workdir=runs/reproduce`. Each run's command is "
    'in its summary (`command`). Test error in %, mean ± std over seeds '
    '(sample std; one value where one seed ran).',
  ]
  if pending:
    lines += [
      '',
      f'**The grid is not finished**: {len(pending)} runs have no summary '
      f'yet ({", ".join(pending)}); their rows are missing below, and no '
      'conclusion is drawn from the rows that are there.',
    ]
  imbalances = sorted({s['imbalance'] for s in summaries}, reverse=True)
  for imb in imbalances:
    stopped = [s for s in summaries if s['imbalance'] == imb and 'stopped' in s]
    runs = [
      s for s in summaries if s['imbalance'] == imb and 'stopped' not in s
    ]
    if not runs:
      continue
    groups = merge(runs)
    plain = [g for g in groups if not g['overrides']]
    lines += ['', f'## Imbalance {imb}', '']
    lines += _protocol(runs) + ['']
    lines += _main_table(plain, imb, paper)
    for a, b, what in PAIRS:
      lines += _paired(groups, a, b, what)
    lines += _eps_table(groups)
    if stopped:
      lines += ['', 'Runs that stopped on a non-finite loss (in no table):', '']
      lines += [f'- {s["name"]}: {s["stopped"]}' for s in stopped]
    lines += _figures(groups, imb, figures_dir, rel)
    lines += ['', 'Commands:', '']
    lines += [
      f'- {s["name"]}: `{s["command"]}`'
      for s in sorted(runs + stopped, key=_method_key)
    ]
  return '\n'.join(lines) + '\n'


def paper_errors() -> dict:
  """The paper's CIFAR-10-LT test errors, from ``configs/cifar10_lt.py``."""
  spec = importlib.util.spec_from_file_location(
    'ltjax_config_c10', cli.CIFAR_CONFIG
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.PAPER_TEST_ERROR


def write(results_dir, path) -> str:
  summaries = load(results_dir)
  done = {(s['imbalance'], s['name']) for s in summaries}
  pending = [
    f'imb{r.imbalance}/{r.name}'
    for runs in GRIDS.values()
    for r in runs
    if (r.imbalance, r.name) not in done
  ]
  figures_dir = os.path.join(results_dir, 'figures')
  rel = os.path.relpath(figures_dir, os.path.dirname(os.path.abspath(path)))
  text = render(summaries, paper_errors(), figures_dir, rel, pending)
  analysis = os.path.join(results_dir, 'analysis.md')
  if os.path.exists(analysis):
    with open(analysis) as f:
      text += '\n' + f.read()
  with open(path, 'w') as f:
    f.write(text)
  return text
