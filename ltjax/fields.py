"""A config field's type and the values it allows, in one declaration.

:class:`Field` ties a default to its type and rule. The methods' tables
(:mod:`ltjax.methods`) declare their hyperparameters with it, the config
schema (:mod:`ltjax.config_schema`) every other field, and
:mod:`ltjax.config_check` validates every field through the same rules.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

INT, NUM, STR, BOOL = 'int', 'number', 'str', 'bool'
INTS = 'ints'  # a tuple (or list) of ints
# What a value of each kind is, in a message.
KIND_TEXT = {
  INT: 'an int',
  NUM: 'a finite number',
  STR: 'a string',
  BOOL: 'True or False',
  INTS: 'a tuple of ints',
}

# (predicate, what is allowed: a string, or an object whose str() is one)
Rule = tuple[Callable[[Any], bool], Any]


class _Unset:
  def __repr__(self) -> str:
    return 'UNSET'


# The default of a field that has none: each config sets it (the schedule
# that ltjax.config_lib.base_config takes as arguments).
UNSET: Any = _Unset()


class _OneOf:
  """``one of [...]``, listing ``options`` as they are when it is printed."""

  def __init__(self, options):
    self.options = options

  def __str__(self) -> str:
    return f'one of {sorted(self.options)}'


def choice(options) -> Rule:
  """``v in options``. A mapping is kept, not copied: a key added to it
  later (a method registered from your own code in
  :data:`ltjax.methods.METHODS`) is allowed too, and named in the message."""
  if not isinstance(options, Mapping):
    options = tuple(options)
  return (lambda v: v in options), _OneOf(options)


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
  if kind == INTS:
    return isinstance(value, (tuple, list)) and all(
      has_type(v, INT) for v in value
    )
  return isinstance(value, str)


@dataclasses.dataclass(frozen=True)
class Field:
  """A config field: its default (:data:`UNSET`: none), type (:data:`INT`,
  :data:`NUM`, :data:`STR`, :data:`BOOL` or :data:`INTS`) and rule, with the
  source of the default and what the field is (``doc``)."""

  default: Any
  kind: str
  rule: Rule = ANY
  source: str = ''
  doc: str = ''

  @property
  def constrained(self) -> bool:
    """Whether the rule refuses some values of the right type."""
    return self.rule is not ANY

  def check(self, value) -> str | None:
    """None if ``value`` is allowed, else what is allowed."""
    ok, allowed = self.rule
    if not has_type(value, self.kind):
      return KIND_TEXT[self.kind] + ('' if self.rule is ANY else f', {allowed}')
    if not ok(value):
      return str(allowed)
    return None
