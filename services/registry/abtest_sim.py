"""Monte Carlo of the A/B decision under continuous monitoring (needs numpy; the service never imports this).

Used by benchmarks/abtest.py (the full figures) and tests/unit/registry/test_abtest_sim.py (fewer runs).

- `simulate`: the success-rate test alone, vectorised over runs: a look every `step` outcomes per arm
  up to `max_n` per arm, the boundary computed by `abtest.half_width` / `abtest.log_lr` on arrays,
  so it is the registry's own rule (tests check it against `abtest.evaluate` look by look).
- `simulate_peeking_z`: the fixed-level one-sided z-test the registry used before, checked at the same
  looks: the baseline that shows why the sequential test is needed.
- `simulate_looks`: `abtest.evaluate` itself, look by look, with errors, latency and a traffic split,
  for the guardrail and sample-ratio scenarios.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from . import abtest

NO_DECISION = 0
PROMOTE = 1
ROLLBACK = 2


@dataclass
class SimResult:
    decision: np.ndarray  # per run: 0 none, 1 promote, 2 rollback
    n_at_decision: np.ndarray  # per run: outcomes per arm at the decision (max_n when none)

    def rate(self, code: int) -> float:
        return float(np.mean(self.decision == code))

    @property
    def false_rate(self) -> float:
        return float(np.mean(self.decision != NO_DECISION))

    def median_n(self, code: int) -> float | None:
        hit = self.n_at_decision[self.decision == code]
        return float(np.median(hit)) if hit.size else None


def _paths(rng: np.random.Generator, p_candidate: float, p_control: float, runs: int, looks: int, step: int):
    cand = np.cumsum(rng.binomial(step, p_candidate, size=(runs, looks)), axis=1)
    ctrl = np.cumsum(rng.binomial(step, p_control, size=(runs, looks)), axis=1)
    return cand, ctrl


def _first(hit: np.ndarray, code_where: np.ndarray, ns: np.ndarray, max_n: int) -> SimResult:
    any_hit = hit.any(axis=1)
    first = np.argmax(hit, axis=1)
    rows = np.arange(hit.shape[0])
    decision = np.where(any_hit, code_where[rows, first], NO_DECISION)
    n = np.where(any_hit, ns[first], max_n)
    return SimResult(decision=decision.astype(int), n_at_decision=n)


def simulate(
    p_candidate: float, p_control: float, *, runs: int = 1000, max_n: int = 5000, step: int = 10,
    alpha: float = abtest.ALPHA, tau: float = abtest.TAU, min_samples: int = abtest.MIN_SAMPLES,
    min_effect: float = 0.0, seed: int = 0,
) -> SimResult:
    rng = np.random.default_rng(seed)
    looks = max_n // step
    ns = np.arange(1, looks + 1) * step
    cand, ctrl = _paths(rng, p_candidate, p_control, runs, looks, step)
    diff, var = abtest.rate_difference(cand, ns, ctrl, ns)
    threshold = math.log(1.0 / alpha)
    better = (diff > min_effect) & (abtest.log_lr(diff - min_effect, var, tau, xp=np) >= threshold)
    worse = (diff < 0) & (abtest.log_lr(diff, var, tau, xp=np) >= threshold)
    ready = ns >= min_samples
    hit = (better | worse) & ready
    return _first(hit, np.where(better, PROMOTE, ROLLBACK), ns, max_n)


def simulate_peeking_z(
    p_candidate: float, p_control: float, *, runs: int = 1000, max_n: int = 5000, step: int = 10,
    alpha: float = abtest.ALPHA, min_samples: int = 200, seed: int = 0,
) -> SimResult:
    """The rule this replaced: pooled two-proportion z-test, one-sided at alpha each way, at every look."""
    rng = np.random.default_rng(seed)
    looks = max_n // step
    ns = np.arange(1, looks + 1) * step
    cand, ctrl = _paths(rng, p_candidate, p_control, runs, looks, step)
    pooled = (cand + ctrl) / (2.0 * ns)
    se = np.sqrt(pooled * (1 - pooled) * 2.0 / ns)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (cand - ctrl) / ns / se, 0.0)
    crit = NormalDist().inv_cdf(1 - alpha)
    better, worse = z > crit, z < -crit
    hit = (better | worse) & (ns >= min_samples)
    return _first(hit, np.where(better, PROMOTE, ROLLBACK), ns, max_n)


@dataclass
class LookResult:
    decision: str  # promote | rollback | inconclusive | none
    srm: bool
    guardrail: str | None
    candidate_n: int
    control_n: int


def simulate_looks(
    rng: np.random.Generator, *, p_candidate: float, p_control: float, traffic: float = 0.5,
    observed_share: float | None = None, drop_candidate_failures: float = 0.0,
    error_candidate: float = 0.0, error_control: float = 0.0,
    latency_candidate: tuple[float, float] = (4.0, 0.5), latency_control: tuple[float, float] = (4.0, 0.5),
    per_look: int = 20, max_total: int = 10000, **evaluate_kwargs,
) -> LookResult:
    """One test run through `abtest.evaluate`, `per_look` outcomes between looks.

    observed_share: the share the router really sends to the candidate (default: `traffic`).
    drop_candidate_failures: share of the candidate's failures the outcome publisher loses (a biased publisher).
    latency_*: (mu, sigma) of a lognormal latency in ms.
    """
    share = traffic if observed_share is None else observed_share
    counts = np.zeros((2, 4))  # rows: candidate, control; cols: n, successes, errors, latency sum
    sq = np.zeros(2)
    running = None
    result = None
    p = (p_candidate, p_control)
    err = (error_candidate, error_control)
    lat = (latency_candidate, latency_control)
    while counts[:, 0].sum() < max_total:
        n_cand = rng.binomial(per_look, share)
        for arm, n in ((0, n_cand), (1, per_look - n_cand)):
            if not n:
                continue
            success = rng.random(n) < p[arm]
            if arm == 0 and drop_candidate_failures:
                success = success[(success) | (rng.random(n) >= drop_candidate_failures)]
            k = success.size
            if not k:
                continue
            ms = rng.lognormal(lat[arm][0], lat[arm][1], size=k)
            counts[arm] += (k, success.sum(), (rng.random(k) < err[arm]).sum(), ms.sum())
            sq[arm] += float((ms * ms).sum())
        c, k = counts
        result = abtest.evaluate(
            int(c[1]), int(c[0]), int(k[1]), int(k[0]), previous=running, candidate_errors=int(c[2]),
            control_errors=int(k[2]), candidate_latency=(float(c[3]), float(sq[0])),
            control_latency=(float(k[3]), float(sq[1])), traffic=traffic, **evaluate_kwargs)
        running = result.running
        if result.decision != "continue":
            break
    assert result is not None
    tripped = [g.name for g in result.guardrails if g.tripped]
    srm = result.srm is not None and result.srm.detected
    decision = result.decision if result.decision != "continue" else "none"
    return LookResult(decision=decision, srm=srm, guardrail=tripped[0] if tripped else None,
                      candidate_n=result.candidate_n, control_n=result.control_n)
