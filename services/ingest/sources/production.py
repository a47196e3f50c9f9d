"""The collector's production pool: a JSONL artifact of `Problem` lines
(`source="production"`, `solutions=[code]`, tests when the outcome had them).
Pool entries without tests can't be verified and are counted as `no_tests`."""

from __future__ import annotations

from lorafleet.services.ingest.sources.lorafleet import to_problem as _problem
from lorafleet.shared.problems import Problem

NAME = "production"


def to_problem(row: dict, index: int | str) -> Problem:
    problem = _problem(row, index)
    if problem.source != NAME:
        problem = problem.model_copy(update={"source": NAME})
    return problem
