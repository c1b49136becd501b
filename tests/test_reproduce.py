"""experiments/reproduce.py: a two-run grid on the tiny model, end to end."""

import json

import jax
import numpy as np
import pytest

from benchmarks import cli
from experiments import reproduce, results_md
from ltjax import train
from ltjax.checkpoint import load_numpy
from ltjax.summary import read_jsonl

# Both stages, an evaluation every epoch, the lr dropping when stage 2 starts.
SETS = [
  'model=tiny',
  'num_epochs=3',
  'stage2_epoch=2',
  'eval_every_epochs=1',
  'lr_boundaries=(2,)',
]


def argv(tmp, data_dir, *extra):
  return [
    f'--data_dir={data_dir}',
    f'--workdir={tmp / "runs"}',
    f'--results_dir={tmp / "results"}',
    f'--results_md={tmp / "RESULTS.md"}',
    '--grids=eps',
    '--only=ours_ce_seed0,cb_finetune_seed0',
    *[f'--set={s}' for s in SETS],
    *extra,
  ]


@pytest.fixture(scope='module')
def grid(tmp_path_factory, cifar_prefix_npz):
  tmp = tmp_path_factory.mktemp('grid')
  reproduce.main(argv(tmp, cifar_prefix_npz.parent))
  return tmp


def test_grid_writes_summaries_and_results_md(grid):
  names = sorted(p.name for p in (grid / 'results' / 'imb100').iterdir())
  assert names == ['cb_finetune_seed0.json', 'ours_ce_seed0.json']
  s = json.loads((grid / 'results/imb100/ours_ce_seed0.json').read_text())
  assert s['stage1_shared'] == '_stage1_ce_seed0' and s['num_seeds'] == 1
  # Both forks record the shared stage 1's evaluations (epochs 1 and 2).
  rows = read_jsonl(grid / 'runs/imb100/_stage1_ce_seed0/evals.jsonl')
  want = [
    [r['epoch'], x['dev_top1_error'], x['test']['top1_error'], x['test']['ece']]
    for r in rows
    for x in r['seeds']
  ]
  assert [r['epoch'] for r in rows] == [1, 2]
  cb = json.loads((grid / 'results/imb100/cb_finetune_seed0.json').read_text())
  assert s['seeds'][0]['stage1'] == cb['seeds'][0]['stage1'] == want
  assert len(s['seeds']) == 1 and len(s['split_sha256']) == 64
  for r in s['seeds']:
    assert r['last']['epoch'] == 3 and 0 <= r['last']['ece'] <= 100
    assert r['dev_selected']['epoch'] in (1, 2, 3)
  assert s['pool_class_counts'][0] == 517 - 110  # less test and dev
  assert "'--config.model=tiny'" in s['command']
  assert sum(s['meta_examples']) == 9 * 100  # 9 meta steps of 100
  assert any(e != 0 for e in s['eps_mean'])
  text = (grid / 'RESULTS.md').read_text()
  assert '| ours_ce | 1 |' in text and '| cb_finetune | 1 |' in text
  assert 'ours_ce − cb_finetune' in text and '23.59' in text  # the paper
  assert 'seeds 0:' in text
  assert (grid / 'results/figures/imb100_per_class.png').exists()


def test_shared_stage1_is_bit_identical_to_a_run_from_scratch(
  grid, tmp_path, cifar_prefix_npz
):
  run = reproduce.Run('ours_ce', 100, seed=0)
  config = reproduce.make_config(run, cifar_prefix_npz.parent, SETS)
  scratch = train.train_and_evaluate(config, tmp_path / 'scratch')
  forked = json.loads(
    (grid / 'runs/imb100/ours_ce_seed0/results.json').read_text()
  )
  forked.pop('run'), scratch.pop('run')
  assert forked == json.loads(json.dumps(scratch))
  (step_a, a), (step_b, b) = (
    load_numpy(grid / 'runs/imb100/ours_ce_seed0'),
    load_numpy(tmp_path / 'scratch'),
  )
  assert step_a == step_b == 27
  same = jax.tree.map(np.array_equal, a, b)
  assert all(jax.tree.leaves(same))


def test_finished_runs_are_skipped_and_results_md_is_regenerated_exactly(
  grid, cifar_prefix_npz, capsys
):
  before = (grid / 'RESULTS.md').read_text()
  (grid / 'RESULTS.md').unlink()
  reproduce.main(argv(grid, cifar_prefix_npz.parent))
  out = capsys.readouterr().out
  assert out.count('done, skipped') == 2 and 'stage 1 of' not in out
  assert (grid / 'RESULTS.md').read_text() == before
  (grid / 'RESULTS.md').unlink()
  reproduce.main(
    ['--summarize', f'--results_dir={grid / "results"}']
    + [f'--results_md={grid / "RESULTS.md"}']
  )
  assert (grid / 'RESULTS.md').read_text() == before


def _summary(method, num_seeds, seed, errors, overrides=None):
  def record(e):
    return {'top1_error': e, 'dev_top1_error': e + 1}

  return {
    'name': reproduce.Run(method, 100, num_seeds, seed=seed).name,
    'method': method,
    'num_seeds': num_seeds,
    'seed': seed,
    'overrides': overrides or {},
    'seeds': [{'last': record(e), 'dev_selected': record(e)} for e in errors],
    'eps_mean': [0.0, 2.0],
    'eps_rms': [3.0, 4.0],
    'weight_mean': [1.0, 1.0],
  }


def test_seeds_of_separate_runs_are_pooled_and_paired_by_seed():
  runs = [
    _summary('cb_finetune', 2, 0, [60.0, 62.0]),  # vectorized 0.0 and 0.1
    _summary('cb_finetune', 1, 0, [64.0]),
    _summary('cb_finetune', 1, 1, [66.0]),
    _summary('ours_ce', 1, 1, [65.0]),
    _summary('ours_ce', 1, 0, [63.0]),
  ]
  groups = {g['label']: g for g in results_md.merge(runs)}
  assert sorted(groups) == ['cb_finetune', 'ours_ce']
  cb = groups['cb_finetune']
  assert [r['id'] for r in cb['seeds']] == ['0.0', '0.1', '0', '1']
  assert cb['num_seeds'] == 4 and cb['eps_rms'] == [3.0, 4.0]
  text = '\n'.join(results_md._paired(list(groups.values())))
  assert 'seeds 0, 1:' in text
  assert '| last | -1.00, -1.00 | -1.00 ± 0.00 |' in text


def test_seeds_whose_stage_1_ran_on_different_processors_are_not_paired():
  def on(summary, processor):
    return dict(summary, machine=f'2026-12-03 09:10 UTC; {processor}')

  runs = [
    on(_summary('cb_finetune', 1, 0, [64.0]), 'Intel Xeon, 2 CPUs'),
    on(_summary('cb_finetune', 1, 1, [66.0]), 'Intel Xeon, 2 CPUs'),
    on(_summary('ours_ce', 1, 0, [63.0]), 'AMD EPYC, 2 CPUs'),
    on(_summary('ours_ce', 1, 1, [65.5]), 'Intel Xeon, 2 CPUs'),
  ]
  text = '\n'.join(results_md._paired(results_md.merge(runs)))
  assert 'seeds 1:' in text
  assert '| last | -0.50 | -0.50 |' in text
  assert (
    'ours_ce − cb_finetune is not paired on seed 0: the two runs continued'
    in text
  )
  only_apart = '\n'.join(results_md._paired(results_md.merge(runs[::2])))
  assert 'seeds' not in only_apart and 'not paired on seed 0' in only_apart


def test_paper_table_matches_the_config_docstring():
  import importlib.util

  spec = importlib.util.spec_from_file_location('c10', cli.CIFAR_CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  rows = {
    line.split()[0]: line.split()[1:]
    for line in module.__doc__.splitlines()
    if line.split() and line.split()[0] in module.PAPER_TEST_ERROR
  }
  for method, by_imb in results_md.paper_errors().items():
    want = [None if v == '-' else float(v) for v in rows[method]]
    assert list(by_imb.values()) == want, method


def test_bad_flags():
  with pytest.raises(SystemExit):
    reproduce.parse_args(['--grids=imb7'])
  with pytest.raises(SystemExit):
    reproduce.parse_args([])  # training needs --data_dir


def test_a_run_that_stops_non_finite_is_recorded_and_the_grid_goes_on(
  grid, tmp_path, monkeypatch, cifar_prefix_npz
):
  import shutil

  shutil.copytree(grid / 'results', tmp_path / 'results')
  trained = []

  def train_run(run, args):
    if run.name == 'ours_ce_eps_lr=100_seed0':
      raise FloatingPointError(
        'non-finite training loss at step 12; stopped. The last good '
        f'checkpoint is kept in {tmp_path / "runs/imb100" / run.name}.'
      )
    trained.append(run.name)
    raise AssertionError(f'{run.name} has a summary already')

  monkeypatch.setattr(reproduce, 'train_run', train_run)
  only = '--only=ours_ce_seed0,cb_finetune_seed0,ours_ce_eps_lr=100_seed0'
  reproduce.main(argv(tmp_path, cifar_prefix_npz.parent, only))
  assert trained == []  # the two finished runs were skipped
  s = json.loads(
    (tmp_path / 'results/imb100/ours_ce_eps_lr=100_seed0.json').read_text()
  )
  assert s['stopped'].startswith('non-finite training loss at step 12')
  assert 'kept in WORKDIR/ours_ce_eps_lr=100_seed0.' in s['stopped']
  assert str(tmp_path) not in s['stopped']  # no machine paths in results
  assert '--config.eps_lr=100.0' in s['command']
  text = (tmp_path / 'RESULTS.md').read_text()
  assert 'Runs that stopped on a non-finite loss' in text
  assert (
    '- ours_ce_eps_lr=100_seed0: non-finite training loss at step 12' in text
  )
  assert '| ours_ce | 1 |' in text  # the finished runs' rows are still there
