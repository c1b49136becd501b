"""Experiments: the grid of training runs behind RESULTS.md.

``grid`` names the runs, ``reproduce`` trains them and writes one summary
per run to ``results/``, and ``results_md`` renders RESULTS.md and its
figures from those summaries alone. Run from the repository root as
``python -m experiments.reproduce``. Measurements live in ``benchmarks/``,
whose ``cli`` (flags, the repository's paths) and ``machine`` (the machine
line of a summary) these modules share.
"""
