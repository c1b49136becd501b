"""Reading the markdown tables that the benchmarks print."""

import re

# (step or stage, implementation) of every row, in table order.
EVERY_ROW = [
  ['ce', 'ltjax'],
  ['ce', 'torch'],
  ['meta', 'ltjax'],
  ['meta', 'torch'],
]


def rows(text: str) -> list[list[str]]:
  """The cells of every ``| ce | ...`` and ``| meta | ...`` row of ``text``."""
  return [
    [cell.strip() for cell in line.strip('|').split('|')]
    for line in text.splitlines()
    if re.match(r'\| (ce|meta) \|', line)
  ]
