"""RESULTS.md's arithmetic on hand-made summaries, against values computed
here: pooled means and sample standard deviations, the last and
dev-selected columns, the dev set's choice, paired differences and the
pooling rules."""

import statistics

import numpy as np
import pytest

from experiments import results_md
from ltjax import evaluate

XEON, EPYC = 'Intel Xeon, 2 CPUs', 'AMD EPYC, 2 CPUs'


def record(top1, dev, many=50.0, medium=40.0, few=10.0, ece=5.0):
  return {
    'top1_error': top1,
    'dev_top1_error': dev,
    'many_shot_accuracy': many,
    'medium_shot_accuracy': medium,
    'few_shot_accuracy': few,
    'ece': ece,
  }


def summary(method, seed, seeds, overrides=None, processor=XEON):
  """``seeds``: ``[(last, dev_selected), ...]`` records, one per seed of
  the run (more than one: vectorized seeds of ``seed``)."""
  name = method + ''.join(f'_{k}={v:g}' for k, v in (overrides or {}).items())
  return {
    'name': f'{name}_seed{seed}',
    'method': method,
    'imbalance': 100,
    'num_seeds': len(seeds),
    'seed': seed,
    'overrides': overrides or {},
    'machine': f'2026-12-04 10:00 UTC; {processor}',
    'seeds': [{'last': last, 'dev_selected': sel} for last, sel in seeds],
    'eps_mean': [0.0, 1.0],
    'eps_rms': [1.0, 2.0],
    'weight_mean': [1.0, 1.0],
  }


def row(lines, first_cell):
  """The cells of the table row whose first cell is ``first_cell``."""
  for line in lines:
    cells = [c.strip() for c in line.strip().strip('|').split('|')]
    if cells[0] == first_cell:
      return cells
  raise AssertionError(f'no row {first_cell!r} in:\n' + '\n'.join(lines))


def mean_std(values):
  return f'{np.mean(values):.2f} ± {statistics.stdev(values):.2f}'


def test_main_table_pools_seeds_over_runs_with_sample_std():
  runs = [
    # Two vectorized seeds in one run, then two runs of one seed each.
    summary('ce', 0, [(record(61.3, 60), record(62.1, 55)),
                      (record(64.0, 63), record(63.5, 58))]),
    summary('ce', 2, [(record(59.2, 57, many=70, ece=3.25),
                       record(60.4, 52))]),
    summary('ce', 3, [(record(66.9, 65, few=4), record(65.0, 61))]),
  ]  # fmt: skip
  (group,) = results_md.merge(runs)
  assert [s['id'] for s in group['seeds']] == ['0.0', '0.1', '2', '3']
  cells = row(results_md._main_table([group], 100, {'ce': {100: 29.64}}), 'ce')
  last = [61.3, 64.0, 59.2, 66.9]
  selected = [62.1, 63.5, 60.4, 65.0]
  assert cells[1] == '4'
  assert cells[2] == mean_std(last)  # 62.85 ± 3.37
  assert cells[3] == mean_std(selected)
  many = [50.0, 50.0, 70.0, 50.0]
  few = [10.0, 10.0, 10.0, 4.0]
  assert cells[4] == (
    f'{np.mean(many):.1f} ± {statistics.stdev(many):.1f} / 40.0 ± 0.0 / '
    f'{np.mean(few):.1f} ± {statistics.stdev(few):.1f}'
  )
  assert cells[5] == mean_std([5.0, 5.0, 3.25, 5.0])
  assert cells[6] == '29.64'


def test_one_seed_has_no_spread_and_a_missing_value_is_a_dash():
  runs = [summary('lws', 2, [(record(58.0, 50, few=None), record(57.5, 49))])]
  cells = row(results_md._main_table(results_md.merge(runs), 100, {}), 'lws')
  assert cells[1:4] == ['1', '58.00', '57.50']
  assert cells[4].endswith('/ –') and cells[6] == '–'


def test_variants_are_separate_groups_and_paired_by_seed():
  runs = [
    summary('ours_ce', k, [(record(60.0 + k, 0), record(59.0 + k, 0))])
    for k in (0, 1, 2)
  ] + [
    summary('ours_ce', k, [(record(e, 0), record(e - 0.5, 0))], {'eps_lr': 100.0})
    for k, e in ((0, 58.7), (1, 61.9), (2, 60.2))
  ]  # fmt: skip
  groups = results_md.merge(runs)
  assert sorted(g['label'] for g in groups) == [
    'ours_ce',
    'ours_ce_eps_lr=100',
  ]
  lines = results_md._paired(groups, 'ours_ce_eps_lr=100', 'ours_ce')
  assert 'seeds 0, 1, 2:' in '\n'.join(lines)
  d_last = np.array([58.7, 61.9, 60.2]) - np.array([60.0, 61.0, 62.0])
  want = ', '.join(f'{x:+.2f}' for x in d_last)
  assert row(lines, 'last') == ['last', want, mean_std(d_last)]
  d_sel = (np.array([58.7, 61.9, 60.2]) - 0.5) - np.array([59.0, 60.0, 61.0])
  assert row(lines, 'dev_selected')[2] == mean_std(d_sel)


def test_pairs_only_seeds_of_one_processor_and_names_the_rest():
  runs = [
    summary('crt', 2, [(record(60.0, 0), record(61.0, 0))]),
    summary('crt', 3, [(record(62.0, 0), record(62.0, 0))], processor=EPYC),
    summary('crt', 4, [(record(63.0, 0), record(63.0, 0))]),
    summary('ce', 2, [(record(66.5, 0), record(65.0, 0))]),
    summary('ce', 3, [(record(67.0, 0), record(67.0, 0))]),
  ]
  lines = results_md._paired(results_md.merge(runs), 'crt', 'ce')
  text = '\n'.join(lines)
  assert 'seeds 2:' in text and 'crt − ce is not paired on seed 3:' in text
  assert row(lines, 'last') == ['last', '-6.50', '-6.50']
  assert row(lines, 'dev_selected') == ['dev_selected', '-4.00', '-4.00']


def test_pairs_by_the_stage_1_evaluations_where_the_summaries_have_them():
  def run(method, seed, top1, stage1, processor=EPYC):
    s = summary(
      method, seed, [(record(top1, 0), record(top1, 0))], None, processor
    )
    if stage1 is not None:
      s['seeds'][0]['stage1'] = stage1
    return s

  one, other = [[160, 55.0, 57.7, 30.1]], [[160, 55.0, 57.7, 30.2]]
  runs = [
    run('crt', 0, 60.0, one),
    run('crt', 1, 61.0, one),  # the same processor, another stage 1
    run('crt', 2, 62.0, one, processor=XEON),  # the same evaluations
    run('crt', 3, 63.0, None),  # older than the record: cannot be checked
    run('crt', 4, 64.0, None),  # both older: by processor
    run('ce', 0, 66.0, one),
    run('ce', 1, 67.0, other),
    run('ce', 2, 68.0, one),
    run('ce', 3, 69.0, one),
    run('ce', 4, 70.0, None),
  ]
  lines = results_md._paired(results_md.merge(runs), 'crt', 'ce')
  text = '\n'.join(lines)
  assert 'seeds 0, 2, 4:' in text
  assert 'crt − ce is not paired on seeds 1, 3: the two runs continued' in text
  assert row(lines, 'last')[1] == '-6.00, -6.00, -6.00'


@pytest.mark.parametrize(
  'devs, chosen',
  [((30.0, 20.0, 25.0), 1), ((20.0, 25.0, 20.0), 2), ((9.0, 9.5, 9.1), 0)],
)
def test_the_dev_set_selects_ties_to_the_later_step(devs, chosen):
  evals = [
    [
      {
        'step': 10 * (i + 1),
        'dev_top1_error': d,
        'test': {'top1_error': 50 - i},
      }
    ]
    for i, d in enumerate(devs)
  ]
  (picked,) = evaluate.last_and_dev_selected(evals)
  assert picked['last']['step'] == 30
  assert picked['dev_selected']['step'] == 10 * (chosen + 1)
