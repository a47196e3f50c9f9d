"""The sandbox as the evaluator's judge: problems with the same limits (and
comparison mode) go to the sandbox's worker pool in one batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lorafleet.shared.problems import Problem


def _group_key(problem: Problem) -> tuple[float, int, bool]:
    return (problem.limits.time_s, problem.limits.memory_mb, problem.exact_compare)


def make_judge(workers: int | None = None):
    """A JudgeFn over the real sandbox (`ajudge_many`)."""

    async def judge(items: list[tuple[str, Problem]]) -> Sequence[Any]:
        from lorafleet.shared.sandbox import RunLimits, ajudge_many

        out: list[Any] = [None] * len(items)
        groups: dict[tuple[float, int, bool], list[int]] = {}
        for i, (_, problem) in enumerate(items):
            groups.setdefault(_group_key(problem), []).append(i)
        for idx in groups.values():
            first = items[idx[0]][1]
            kwargs: dict[str, Any] = {"limits": RunLimits.from_problem(first.limits), "workers": workers}
            if first.exact_compare:
                kwargs["exact"] = True
            judged = await ajudge_many([(items[i][0], items[i][1].tests) for i in idx], **kwargs)
            for i, j in zip(idx, judged, strict=True):
                out[i] = j
        return out

    return judge
