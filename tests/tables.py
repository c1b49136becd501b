"""Reading the markdown tables that the benchmarks print."""

import re


def rows(text: str) -> list[list[str]]:
  """The cells of every ``| ce | ...`` and ``| meta | ...`` row of ``text``."""
  return [
    [cell.strip() for cell in line.strip('|').split('|')]
    for line in text.splitlines()
    if re.match(r'\| (ce|meta) \|', line)
  ]
