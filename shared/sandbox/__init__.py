"""Run untrusted Python safely and fast: warm fork servers inside pid/net/mount namespaces, one child per run.

    from lorafleet.shared.sandbox import run, judge, judge_many, ajudge_many, RunLimits

See docs/sandbox.md for the isolation layers and verdicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from lorafleet.shared.problems import TestCase
from lorafleet.shared.sandbox.models import ALL_LAYERS, Judgement, RunLimits, RunResult
from lorafleet.shared.sandbox.pool import (
    IsolationUnavailable, JudgeItem, Sandbox, check_isolation, default_sandbox, machine_workers,
)

__all__ = [
    "ALL_LAYERS", "IsolationUnavailable", "Judgement", "RunLimits", "RunResult", "Sandbox", "ajudge", "ajudge_many",
    "arun", "check_isolation", "default_sandbox", "judge", "judge_many", "machine_workers", "run",
]


def run(code: str, stdin: str = "", limits: RunLimits | None = None) -> RunResult:
    return default_sandbox().run(code, stdin, limits)


def judge(code: str, tests: Sequence[TestCase], limits: RunLimits | None = None, exact: bool = False,
          fail_fast: bool = True) -> Judgement:
    return default_sandbox().judge(code, tests, limits, exact, fail_fast)


def judge_many(items: Iterable[JudgeItem], limits: RunLimits | None = None, workers: int | None = None,
               exact: bool = False, fail_fast: bool = True) -> list[Judgement]:
    return default_sandbox().judge_many(items, limits, workers, exact, fail_fast)


async def arun(code: str, stdin: str = "", limits: RunLimits | None = None) -> RunResult:
    return await default_sandbox().arun(code, stdin, limits)


async def ajudge(code: str, tests: Sequence[TestCase], limits: RunLimits | None = None, exact: bool = False) -> Judgement:
    return await default_sandbox().ajudge(code, tests, limits, exact)


async def ajudge_many(items: Iterable[JudgeItem], limits: RunLimits | None = None, workers: int | None = None,
                      exact: bool = False, fail_fast: bool = True) -> list[Judgement]:
    return await default_sandbox().ajudge_many(items, limits, workers, exact, fail_fast)
