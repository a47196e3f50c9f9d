"""The A/B decision: one-sided two-proportion z-tests on success rates (pure).

`promote` when the candidate is better than the control at level alpha,
`rollback` when it is worse, both only once each arm has `min_samples`
outcomes; `inconclusive` once both arms reach `max_samples` without either.
The test is re-run as outcomes arrive (repeated looks inflate the false-positive
rate above alpha; raise `min_samples` or lower alpha to compensate).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel

Decision = Literal["continue", "promote", "rollback", "inconclusive"]


class AbResult(BaseModel):
    decision: Decision
    candidate_n: int
    candidate_successes: int
    control_n: int
    control_successes: int
    candidate_rate: float | None
    control_rate: float | None
    z: float | None
    p_better: float | None  # P-value of H0 "candidate <= control + min_effect"
    p_worse: float | None  # P-value of H0 "candidate >= control"
    alpha: float
    min_samples: int


def _normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _z(s1: int, n1: int, s2: int, n2: int, delta: float) -> float | None:
    p1, p2 = s1 / n1, s2 / n2
    if delta == 0.0:
        pooled = (s1 + s2) / (n1 + n2)
        var = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    else:
        var = p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2
    if var <= 0.0:
        return None  # both arms all-success or all-failure: no evidence either way
    return (p1 - p2 - delta) / math.sqrt(var)


def evaluate(
    candidate_successes: int,
    candidate_n: int,
    control_successes: int,
    control_n: int,
    *,
    alpha: float = 0.05,
    min_samples: int = 200,
    max_samples: int | None = None,
    min_effect: float = 0.0,
) -> AbResult:
    for label, s, n in (("candidate", candidate_successes, candidate_n), ("control", control_successes, control_n)):
        if n < 0 or s < 0 or s > n:
            raise ValueError(f"{label} arm has {s} successes out of {n} outcomes")
    base = dict(
        candidate_n=candidate_n, candidate_successes=candidate_successes,
        control_n=control_n, control_successes=control_successes,
        candidate_rate=candidate_successes / candidate_n if candidate_n else None,
        control_rate=control_successes / control_n if control_n else None,
        alpha=alpha, min_samples=min_samples,
    )
    if candidate_n < min_samples or control_n < min_samples:
        return AbResult(decision="continue", z=None, p_better=None, p_worse=None, **base)
    z_better = _z(candidate_successes, candidate_n, control_successes, control_n, min_effect)
    z_worse = _z(candidate_successes, candidate_n, control_successes, control_n, 0.0)
    p_better = _normal_sf(z_better) if z_better is not None else None
    p_worse = _normal_sf(-z_worse) if z_worse is not None else None
    decision: Decision = "continue"
    if p_better is not None and p_better < alpha:
        decision = "promote"
    elif p_worse is not None and p_worse < alpha:
        decision = "rollback"
    elif max_samples is not None and candidate_n >= max_samples and control_n >= max_samples:
        decision = "inconclusive"
    return AbResult(decision=decision, z=z_better, p_better=p_better, p_worse=p_worse, **base)
