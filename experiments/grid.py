"""The runs behind RESULTS.md: each a method, an imbalance, a seed, overrides.

:mod:`experiments.reproduce` trains them in the order of :data:`GRIDS`;
``Run.name`` names each one's workdir and its summary
``results/imb<IF>/<name>.json``.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Run:
  """One cell of the grid: a method at an imbalance, with ``seeds``
  vectorized seeds from ``config.seed = seed`` and config overrides
  (``((field, value), ...)``)."""

  method: str
  imbalance: int
  seeds: int = 1
  overrides: tuple = ()
  seed: int = 0

  @property
  def seed_tag(self) -> str:
    """``_s2`` (2 vectorized seeds), ``_seed1`` (one run of seed 1)."""
    if self.seeds > 1:
      return f'_s{self.seeds}' + (f'_seed{self.seed}' if self.seed else '')
    return f'_seed{self.seed}'

  @property
  def name(self) -> str:
    extra = ''.join(f'_{k}={v:g}' if isinstance(v, float) else f'_{k}={v}'
                    for k, v in self.overrides)  # fmt: skip
    return f'{self.method}{extra}{self.seed_tag}'

  @property
  def variant(self) -> str:
    """The CLI flags that run this cell (without the data folder)."""
    flags = [
      f'--config=configs/cifar10_lt.py:source=npz,method={self.method},'
      f'imb={self.imbalance}'
    ]
    if self.seeds > 1:
      flags.append(f'--config.num_seeds={self.seeds}')
    if self.seed:
      flags.append(f'--config.seed={self.seed}')
    flags += [f'--config.{k}={v}' for k, v in self.overrides]
    return ' '.join(flags)


# On a 2-core CPU a 200-epoch run takes about as long per seed with
# vectorized seeds as with one seed per run (BENCHMARKS.md), and a machine
# can be replaced between working sessions: the grid runs one seed per run,
# so that every run, with its shared stage 1, fits in one session. ce and
# cb_finetune at imbalance 100 first ran as 2 vectorized seeds; they stay.
SEEDS = (0, 1)
EPS_VARIANTS = (
  (('eps_lr', 100.0),),
  (('eps_lr', 1e4),),
  (('eps_lr', 1.0),),
  (('inner_reduction', 'mean'),),
)


def _eps() -> list[Run]:
  """How much ε does: ours_ce and cb_finetune on the same seeds (one stage 1
  per seed), and ours_ce as τ and the inner reduction vary."""
  runs = []
  for k in SEEDS:
    runs += [Run('ours_ce', 100, seed=k), Run('cb_finetune', 100, seed=k)]
    runs += [Run('ours_ce', 100, overrides=o, seed=k) for o in EPS_VARIANTS]
  return runs


def _imb100() -> list[Run]:
  one = ('focal', 'ours_focal', 'ldam', 'ldam_drw', 'ours_ldam', 'cb_focal',
         'l2rw', 'mwn')  # fmt: skip
  return (
    [Run('ce', 100, 2), Run('cb_finetune', 100, 2)]
    + [Run('cb_ce', 100, seed=k) for k in SEEDS]
    + [Run(m, 100) for m in one]
  )


# Three more seeds of the paired ε comparison, so that ours_ce - cb_finetune
# and the τ = 100 gain rest on five seeds. The forks of one seed share its
# stage 1 and must run on one machine.
MORE_SEEDS = (2, 3, 4)


def _seeds5() -> list[Run]:
  runs = []
  for k in MORE_SEEDS:
    runs += [Run(m, 100, seed=k) for m in ('ce', 'cb_finetune', 'ours_ce')]
    runs.append(Run('ours_ce', 100, overrides=EPS_VARIANTS[0], seed=k))
  return runs


# The baselines after the paper (ltjax.methods): the decoupling family and
# post-hoc logit adjustment fork from the CE stage 1 of their seed; la,
# ours_la (one la stage 1) and bs train their own. At imbalance 100 they take
# seeds 2 and 3, whose CE stage 1 `seeds5` trains on the same machine, so
# that they pair with ce on one stage 1.
NEW_METHODS = ('crt', 'lws', 'tau_norm', 'la_posthoc', 'la', 'ours_la', 'bs')


def _decouple() -> list[Run]:
  runs = [Run(m, 100, seed=k) for k in (2, 3) for m in NEW_METHODS]
  return runs + [Run(m, 10, seed=k) for k in SEEDS for m in NEW_METHODS]


# In the order they run: how much ε does (and ours_ce's row), the rest of
# the paper's table, then imbalance 10, more seeds of the ε pairs, and the
# baselines after the paper.
GRIDS = {
  'eps': _eps(),
  'imb100': _imb100(),
  'imb10': [
    Run(m, 10, seed=k)
    for k in SEEDS
    for m in ('ce', 'cb_finetune', 'ours_ce', 'cb_ce')  # fmt: skip
  ],
  'seeds5': _seeds5(),
  'decouple': _decouple(),
}
