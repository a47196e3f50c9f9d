"""Execution verification: every candidate solution runs against its problem's tests
in the sandbox; only those that pass all of them are kept.

- Tests per problem are capped by a deterministic sample (the source's own tests
  first: CodeContests public + private before generated, LiveCodeBench public first).
- Candidates that are the same program up to comments/spacing run once; the
  verdict counts for each copy.
- A time budget per problem: candidates run in rounds (1, 2, 4, ... per problem), and
  a problem whose judged wall time has reached the budget runs no more rounds; the
  rest count as `budget_exhausted`. Rounds batch many problems, so the sandbox's
  workers stay busy.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

from lorafleet.services.ingest.dedup import solution_key
from lorafleet.shared.problems import Limits, Problem, TestCase

# (code, tests, limits, exact_compare) -> (verdict, wall_ms) per item, same order.
JudgeItem = tuple[str, list[TestCase], Limits, bool]
Judge = Callable[[Sequence[JudgeItem]], list[tuple[str, float]]]


def select_tests(problem: Problem, cap: int) -> list[TestCase]:
    tests = problem.tests
    if len(tests) <= cap:
        return list(tests)
    first = min(int(problem.meta.get("tests_first") or 0), cap)
    rng = random.Random(hashlib.sha256(problem.id.encode()).hexdigest())
    rest = sorted(rng.sample(range(first, len(tests)), cap - first))
    return tests[:first] + [tests[i] for i in rest]


@dataclass
class Verified:
    problem: Problem  # tests = the sample judged; solutions = the unique ones that passed
    candidates: int  # Python 3 candidates, duplicates included
    verdicts: Counter = field(default_factory=Counter)  # per candidate, duplicates included
    duplicates: int = 0  # candidates that repeat an earlier one up to comments/spacing

    @property
    def verified(self) -> int:
        return self.verdicts.get("passed", 0)


def verify_problems(problems: list[Problem], judge: Judge, max_tests: int, budget_s: float) -> list[Verified]:
    tests = [select_tests(p, max_tests) for p in problems]
    groups: list[dict[str, list[str]]] = []  # per problem: solution key -> copies (first = the one run)
    for p in problems:
        g: dict[str, list[str]] = {}
        for code in p.solutions:
            g.setdefault(solution_key(code), []).append(code)
        groups.append(g)
    order = [list(g) for g in groups]
    results: list[dict[str, str]] = [{} for _ in problems]
    spent_ms = [0.0] * len(problems)
    done = [0] * len(problems)
    per_round = 1
    while True:
        batch: list[tuple[int, str]] = []
        for i, keys in enumerate(order):
            if done[i] < len(keys) and spent_ms[i] < budget_s * 1000:
                batch.extend((i, k) for k in keys[done[i]:done[i] + per_round])
                done[i] = min(done[i] + per_round, len(keys))
        if not batch:
            break
        items = [(groups[i][k][0], tests[i], problems[i].limits, problems[i].exact_compare) for i, k in batch]
        for (i, k), (verdict, wall_ms) in zip(batch, judge(items)):
            results[i][k] = verdict
            spent_ms[i] += wall_ms
        per_round *= 2

    out = []
    for p, t, g, res in zip(problems, tests, groups, results):
        verdicts: Counter = Counter()
        passed = []
        for key, copies in g.items():
            verdict = res.get(key, "budget_exhausted")
            verdicts[verdict] += len(copies)
            if verdict == "passed":
                passed.append(copies[0])
        out.append(Verified(p.model_copy(update={"tests": t, "solutions": passed}), len(p.solutions), verdicts,
                            duplicates=len(p.solutions) - len(g)))
    return out


def unverified(problems: list[Problem], max_tests: int) -> list[Verified]:
    """Verification off: solutions kept as they are, tests still capped; no verdicts."""
    out = []
    for p in problems:
        unique = list({solution_key(c): c for c in reversed(p.solutions)}.values())[::-1]
        out.append(Verified(p.model_copy(update={"tests": select_tests(p, max_tests), "solutions": unique}),
                            len(p.solutions), Counter({"not_verified": len(p.solutions)}),
                            duplicates=len(p.solutions) - len(unique)))
    return out


# Memory limits are C++ judges' resident-set limits; the sandbox enforces address space, which
# a Python interpreter needs more of: below this floor, accepted Python solutions fail to start.
MIN_MEMORY_MB = 256
MIN_TIME_S = 0.25  # a warm fork-server child needs a few ms; sub-0.25 s limits only add flakiness


def run_limits(limits: Limits):  # -> RunLimits
    from lorafleet.shared.sandbox import RunLimits

    return RunLimits.from_problem(Limits(time_s=min(max(limits.time_s, MIN_TIME_S), 600.0),
                                         memory_mb=min(max(limits.memory_mb, MIN_MEMORY_MB), 65536)))


def sandbox_judge(workers: int | None = None) -> Judge:
    """The real judge: the sandbox's `judge_many` over warm fork servers, each item with its own limits."""
    from lorafleet.shared.sandbox import judge_many

    def judge(items: Sequence[JudgeItem]) -> list[tuple[str, float]]:
        wired = [(code, tests, run_limits(limits), exact) for code, tests, limits, exact in items]
        return [(j.verdict, j.wall_ms) for j in judge_many(wired, workers=workers)]

    return judge
