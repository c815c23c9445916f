"""Selection rules, parsed in one place: the study file validates ``finish.export.select`` with it, and
:func:`scalekit.results.selection.select_stage` applies it.

- ``best``: the highest mean Dice.
- ``knee``: the knee of the Dice-memory Pareto front.
- ``max-dice-under=24GB``: the highest Dice whose peak memory fits the budget (GB, GiB or MB; GB = 2^30 bytes
  as GPU memory is quoted; a bare number is GB).
- anything else: a stage id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from scalekit.errors import ScalekitError

NAMED_RULES = ("best", "knee")
BUDGET_RULE = "max-dice-under="
_UNITS = {"gb": 2.0**30, "g": 2.0**30, "gib": 2.0**30, "mb": 2.0**20, "m": 2.0**20, "mib": 2.0**20}
_BUDGET = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_memory_budget(text: str) -> float:
    """Bytes of a budget such as ``24GB``, ``22.5GiB``, ``800MB`` or ``24`` (GB)."""
    match = _BUDGET.match(text)
    unit = match.group(2).lower() if match else ""
    if not match or (unit and unit not in _UNITS):
        raise ScalekitError(f"memory budget {text!r} is not understood; write e.g. 24GB, 22.5GiB or 800MB")
    value = float(match.group(1)) * _UNITS[unit or "gb"]
    if value <= 0:
        raise ScalekitError(f"memory budget {text!r} must be positive")
    return value


@dataclass(frozen=True)
class Rule:
    """A parsed rule: ``kind`` is ``best``, ``knee``, ``budget`` (with ``budget_bytes``) or ``stage``."""

    text: str
    kind: str
    budget_bytes: float | None = None


def parse_rule(text: str) -> Rule:
    """The rule ``text`` names (a budget is checked here; a stage id only where the stages are known)."""
    rule = text.strip()
    if rule in NAMED_RULES:
        return Rule(rule, rule)
    if rule.startswith(BUDGET_RULE):
        return Rule(rule, "budget", parse_memory_budget(rule.removeprefix(BUDGET_RULE)))
    return Rule(rule, "stage")
