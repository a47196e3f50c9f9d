"""Train/eval split by problem (all solutions of a problem on one side), seeded and
independent of input order; the LiveCodeBench date cutoff."""

from __future__ import annotations

import hashlib
from typing import Iterable


def _rank(problem_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{problem_id}".encode()).hexdigest()


def eval_ids(problem_ids: Iterable[str], eval_fraction: float, seed: int) -> set[str]:
    """The problems that go to eval: the `round(n * eval_fraction)` lowest seeded hashes,
    at least one and at most n - 1 when there are two or more problems."""
    ids = sorted(set(problem_ids), key=lambda pid: _rank(pid, seed))
    n = len(ids)
    if n < 2:
        return set()
    k = min(max(round(n * eval_fraction), 1), n - 1)
    return set(ids[:k])


def resolve_cutoff(configured: str | None, train_dates: Iterable[str | None]) -> str | None:
    """The configured cutoff, else the latest contest date in the training data (None: no dates known)."""
    if configured:
        return configured
    dates = [d for d in train_dates if d]
    return max(dates) if dates else None


def after_cutoff(contest_date: str | None, cutoff: str | None) -> bool:
    """Kept for validation: dated strictly after the cutoff (no cutoff: everything; no date: never)."""
    if cutoff is None:
        return True
    return contest_date is not None and contest_date[:10] > cutoff[:10]
