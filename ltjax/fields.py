"""A config field's type and the values it allows, in one declaration.

:class:`Field` ties a default to its type and rule. The methods' tables
(:mod:`ltjax.methods`) declare their hyperparameters with it, and
:mod:`ltjax.config_check` validates every field through the same rules.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from typing import Any

INT, NUM, STR, BOOL = 'int', 'number', 'str', 'bool'

Rule = tuple[Callable[[Any], bool], str]  # (predicate, what is allowed)


def choice(options) -> Rule:
  options = tuple(options)
  return (lambda v: v in options), f'one of {sorted(options)}'


def at_least(low, *, strict=False) -> Rule:
  if strict:
    return (lambda v: v > low), f'> {low}'
  return (lambda v: v >= low), f'>= {low}'


def in_range(low, high) -> Rule:
  return (lambda v: low <= v < high), f'in [{low}, {high})'


ANY: Rule = (lambda v: True), 'any value'


def has_type(value, kind) -> bool:
  if kind == BOOL:
    return isinstance(value, bool)
  if kind == INT:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
  if kind == NUM:
    return (
      isinstance(value, numbers.Real)
      and not isinstance(value, bool)
      and math.isfinite(value)
    )
  return isinstance(value, str)


@dataclasses.dataclass(frozen=True)
class Field:
  """A config field: its default, type (:data:`INT`, :data:`NUM`,
  :data:`STR` or :data:`BOOL`) and rule, with the source of the default."""

  default: Any
  kind: str
  rule: Rule = ANY
  source: str = ''

  def check(self, value) -> str | None:
    """None if ``value`` is allowed, else what is allowed."""
    ok, allowed = self.rule
    if not has_type(value, self.kind):
      return f'a finite {self.kind}, {allowed}'
    if not ok(value):
      return allowed
    return None
