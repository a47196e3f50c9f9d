"""The validation gate: each criterion with its measured value, threshold and verdict.

A criterion whose value could not be measured fails: an adapter is never
promoted on a number nobody measured.
"""

from __future__ import annotations

import operator
from typing import Any

from lorafleet.shared.config import GateSection
from lorafleet.shared.events import GateCriterion

_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def _criterion(name: str, measured: float | None, comparison: str, threshold: float) -> GateCriterion:
    passed = measured is not None and bool(_OPS[comparison](measured, threshold))
    return GateCriterion(name=name, measured=measured, threshold=threshold, comparison=comparison, passed=passed)  # type: ignore[arg-type]


def evaluate_gate(metrics: dict[str, Any], gate: GateSection) -> list[GateCriterion]:
    adapter = metrics.get("adapter") or {}
    delta = metrics.get("delta_pass@1") or {}
    criteria = [
        _criterion("pass@1", adapter.get("pass@1"), ">=", gate.min_pass_at_1),
        _criterion("delta_pass@1", delta.get("mean"), ">=", gate.min_delta_pass_at_1),
        _criterion("latency_increase", metrics.get("latency_increase"), "<", gate.max_latency_increase),
        _criterion("error_rate", adapter.get("error_rate"), "<", gate.max_error_rate),
    ]
    if gate.require_significant_delta:
        criteria.append(_criterion("delta_pass@1_ci_low", delta.get("low"), ">", 0.0))
    return criteria


def gate_passed(criteria: list[GateCriterion]) -> bool:
    return bool(criteria) and all(c.passed for c in criteria)
