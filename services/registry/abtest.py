"""The A/B decision: an always-valid sequential test (pure, no I/O, no numpy).

The registry may call `evaluate` after every outcome, as often as it likes: the
chance that an A/A test (candidate no different from the control) ever ends
in a promotion or a rollback stays at or below `alpha`.

Method: the normal-mixture boundary of Robbins (1970), as used by the mixture
sequential probability ratio test of Johari, Koomen, Pekelis and Walsh ("Always
Valid Inference", Optimizely) and, in the same closed form, by the asymptotic
confidence sequences of Waudby-Smith et al. (GrowthBook, Statsig). With an
estimate D of the difference, its plug-in variance V and a mixing standard
deviation `tau` (on the scale of the difference), the mixture likelihood ratio
against the point null D0 is

    L = sqrt(V / (V + tau²)) * exp(tau² (D - D0)² / (2 V (V + tau²)))

and {D0 : L < 1/alpha}, i.e. D ± sqrt(V (V + tau²) / tau² * (2 log(1/alpha) +
log((V + tau²) / V))), is a confidence sequence: it covers the true difference
at every look at once with probability >= 1 - alpha. One two-sided sequence
decides both ways (lower bound above `min_effect` promotes, upper bound below 0
rolls back), so alpha is the total error rate of both decisions together.
The always-valid p-value is the smallest alpha at which the sequence has
excluded the null at some look: min over looks of 1/L, carried in `Running`.

Guardrails use the same machinery: the candidate's error rate minus the
control's (rollback when the lower bound exceeds `max_error_increase`), and
the ratio of mean latencies by the delta method (rollback when the lower bound
exceeds `max_latency_ratio`). The split of outcomes between the arms is checked
with the sequential multinomial test of Lindon & Malek ("Anytime-valid
inference for multinomial count data", NeurIPS 2022): a Dirichlet-multinomial
Bayes factor against the configured traffic share, a test martingale under the
null. When it passes 1/srm_alpha the counts can't be trusted (broken router,
biased outcome publisher): `srm` is set and the decision is `inconclusive`,
never promote or rollback. A bias too small for that test to see yet (a
publisher that loses some of the candidate's failures) is met on the promotion
side: promotion is judged with the candidate's count raised to what the
control's count and the traffic share predict, the missing outcomes counted as
failures (`split_robust_candidate`); it only ever lowers the candidate's rate.

The functions that compute a boundary take `xp` (the `math` module by default)
so abtest_sim.py (benchmarks/abtest.py, the Monte Carlo test) runs the same
code on numpy arrays. docs/registry.md explains the choices and the figures.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Decision = Literal["continue", "promote", "rollback", "inconclusive"]

# Production defaults (RegistrySettings uses the same numbers; docs/registry.md explains them).
ALPHA = 0.05
TAU = 0.05  # mixing sd of the success-rate difference: effects near 5 points are found fastest
MIN_SAMPLES = 100  # per arm before any decision: burn-in for the normal approximation
GUARDRAIL_ALPHA = 0.01
ERROR_TAU = 0.02  # error rates are small: effects near 2 points
LATENCY_TAU = 0.1  # latency ratio: effects near 10%
MAX_LATENCY_RATIO = 1.2
SRM_ALPHA = 0.01
SRM_CONCENTRATION = 100.0  # Dirichlet prior: sd of the share about sqrt(p(1-p)/101), 5 points at p=0.5
METHOD = "normal-mixture confidence sequence (mSPRT, Johari et al. 2017; Waudby-Smith et al. 2024)"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Running(_Model):
    """What carries over between looks: running minima of the p-values, the intersected interval."""

    p_value: float = 1.0
    p_better: float = 1.0
    p_worse: float = 1.0
    low: float | None = None
    high: float | None = None
    promote_low: float | None = Field(None, description="running lower bound on split-robust counts (promotion)")
    error_p: float = 1.0
    latency_p: float = 1.0
    srm_p: float = 1.0
    srm_log_e_before: float = Field(0.0, description="log Bayes factor of split segments before the last traffic change")


class Guardrail(_Model):
    name: Literal["errors", "latency"]
    estimate: float | None = Field(description="errors: candidate - control rate; latency: candidate / control mean")
    low: float | None
    high: float | None
    limit: float = Field(description="tripped when the interval's low end is above this")
    p_value: float = Field(description="always-valid p-value of 'candidate within the limit'")
    tripped: bool
    holding: bool = Field(False, description="the data now favour harm (likelihood ratio > 1): promotion waits")


class Srm(_Model):
    traffic: float = Field(description="configured share of the candidate")
    observed: float | None = Field(description="candidate share of the counted outcomes")
    log_e: float = Field(description="log of the Lindon-Malek Bayes factor (e-value) against the configured split")
    p_value: float
    detected: bool


class AbResult(_Model):
    decision: Decision
    reason: str = ""
    method: str = METHOD
    candidate_n: int
    candidate_successes: int
    control_n: int
    control_successes: int
    candidate_rate: float | None
    control_rate: float | None
    difference: float | None = Field(None, description="candidate - control success rate")
    low: float | None = Field(None, description="confidence sequence for the difference (always valid, 1 - alpha)")
    high: float | None = None
    z: float | None = Field(None, description="fixed-horizon z of the difference (for reference only)")
    p_value: float | None = Field(None, description="always-valid two-sided p-value of 'no difference'")
    p_better: float | None = Field(
        None, description="always-valid p-value of 'candidate <= control + min_effect' (split-robust counts)")
    p_worse: float | None = Field(None, description="always-valid p-value of 'candidate >= control'")
    promotion_low: float | None = Field(
        None, description="lower bound of the difference on split-robust counts: promotion needs it above min_effect")
    alpha: float
    tau: float = TAU
    min_samples: int
    min_effect: float = 0.0
    guardrails: list[Guardrail] = Field(default_factory=list)
    srm: Srm | None = None
    running: Running = Field(default_factory=Running)


# --------------------------------------------------------------------------- the boundary


def half_width(var, tau: float, alpha: float, xp: Any = math):
    """Half-width of the normal-mixture confidence sequence at a look with estimate variance `var` (> 0)."""
    t2 = tau * tau
    return xp.sqrt(var * (var + t2) / t2 * (xp.log((var + t2) / var) + 2.0 * math.log(1.0 / alpha)))


def log_lr(diff, var, tau: float, xp: Any = math):
    """log of the mixture likelihood ratio for `diff` = estimate - null value."""
    t2 = tau * tau
    return 0.5 * xp.log(var / (var + t2)) + t2 * diff * diff / (2.0 * var * (var + t2))


def rate_difference(s1, n1, s2, n2):
    """Estimate of rate1 - rate2 and its variance. The variance uses (s+1)/(n+2), so an arm with all
    successes (or none) doesn't claim zero variance; n1, n2 must be >= 1."""
    r1, r2 = (s1 + 1.0) / (n1 + 2.0), (s2 + 1.0) / (n2 + 2.0)
    return s1 / n1 - s2 / n2, r1 * (1.0 - r1) / n1 + r2 * (1.0 - r2) / n2


def fixed_horizon_n(p: float, effect: float, alpha: float = ALPHA, power: float = 0.9) -> int:
    """Outcomes per arm a fixed-horizon two-sided z-test at level alpha needs for `power` at this effect."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    q = p + effect
    return math.ceil(z * z * (p * (1 - p) + q * (1 - q)) / (effect * effect))


def split_robust_candidate(successes: int, n: int, traffic: float,
                           split_counts: tuple[int, int]) -> tuple[float, float]:
    """The candidate's (successes, n) with n raised to the count that the control's count and the traffic
    share predict, when it falls short: the missing outcomes count as failures. Only ever lowers the
    candidate's rate, so it can delay a promotion but never cause one. split_counts: the (candidate,
    control) counts since the share last changed (earlier counts are taken as they are)."""
    if not 0.0 < traffic < 1.0:
        return successes, n
    expected = (n - split_counts[0]) + split_counts[1] * traffic / (1.0 - traffic)
    if expected < 1.0:
        return successes, n
    return successes, max(float(n), expected)


def _p(log_l: float) -> float:
    return 1.0 if log_l <= 0 else math.exp(-log_l)


# --------------------------------------------------------------------------- sample-ratio mismatch


def srm_log_bf(counts: tuple[int, ...], shares: tuple[float, ...], concentration: float = SRM_CONCENTRATION) -> float:
    """log Bayes factor of a Dirichlet(concentration * shares) mixture over the multinomial against `shares`
    (Lindon & Malek 2022). inf when a category with share 0 has counts."""
    if any(n and p <= 0 for n, p in zip(counts, shares)):
        return math.inf
    used = [(n, p) for n, p in zip(counts, shares) if p > 0]
    total = sum(n for n, _ in used)
    prior = [concentration * p for _, p in used]
    out = math.lgamma(sum(prior)) - math.lgamma(sum(prior) + total)
    for (n, p), a in zip(used, prior):
        out += math.lgamma(a + n) - math.lgamma(a) - n * math.log(p)
    return out


# --------------------------------------------------------------------------- guardrails


def _errors(ce: int, cn: int, ke: int, kn: int, limit: float, alpha: float, tau: float, prev: float) -> Guardrail:
    est, var = rate_difference(ce, cn, ke, kn)
    hw = half_width(var, tau, alpha)
    harm = log_lr(est - limit, var, tau) if est > limit else -math.inf
    return Guardrail(name="errors", estimate=est, low=est - hw, high=est + hw, limit=limit,
                     p_value=min(prev, _p(harm)), tripped=est - hw > limit, holding=harm > 0)


def _latency(cn: int, c: tuple[float, float], kn: int, k: tuple[float, float], limit: float, alpha: float,
             tau: float, prev: float) -> Guardrail | None:
    mc, mk = c[0] / cn, k[0] / kn
    if mk <= 0 or cn < 2 or kn < 2:
        return None  # no control latency to compare against
    vc = max(c[1] - cn * mc * mc, 0.0) / (cn - 1)
    vk = max(k[1] - kn * mk * mk, 0.0) / (kn - 1)
    ratio = mc / mk
    # delta method: Var(mc/mk) ~ ratio² (vc / (cn mc²) + vk / (kn mk²)); mc = 0 leaves only the control's term
    var = (vc / cn + ratio * ratio * vk / kn) / (mk * mk)
    if var <= 0:  # every latency identical in both arms: nothing to test, but a constant excess still holds
        return Guardrail(name="latency", estimate=ratio, low=ratio, high=ratio, limit=limit, p_value=prev,
                         tripped=False, holding=ratio > limit)
    hw = half_width(var, tau, alpha)
    harm = log_lr(ratio - limit, var, tau) if ratio > limit else -math.inf
    return Guardrail(name="latency", estimate=ratio, low=ratio - hw, high=ratio + hw, limit=limit,
                     p_value=min(prev, _p(harm)), tripped=ratio - hw > limit, holding=harm > 0)


# --------------------------------------------------------------------------- the decision


def _check(label: str, s: int, n: int) -> None:
    if n < 0 or s < 0 or s > n:
        raise ValueError(f"{label} arm has {s} successes out of {n} outcomes: counts must satisfy 0 <= successes <= n")


def evaluate(
    candidate_successes: int,
    candidate_n: int,
    control_successes: int,
    control_n: int,
    *,
    alpha: float = ALPHA,
    tau: float = TAU,
    min_samples: int = MIN_SAMPLES,
    max_samples: int | None = None,
    min_effect: float = 0.0,
    previous: Running | None = None,
    candidate_errors: int = 0,
    control_errors: int = 0,
    candidate_latency: tuple[float, float] | None = None,
    control_latency: tuple[float, float] | None = None,
    guardrail_alpha: float = GUARDRAIL_ALPHA,
    max_error_increase: float = 0.0,
    error_tau: float = ERROR_TAU,
    max_latency_ratio: float | None = MAX_LATENCY_RATIO,
    latency_tau: float = LATENCY_TAU,
    traffic: float | None = None,
    split_counts: tuple[int, int] | None = None,
    srm_alpha: float = SRM_ALPHA,
    srm_concentration: float = SRM_CONCENTRATION,
    split_robust: bool = True,
) -> AbResult:
    """One look at an A/B test. Pass the `running` of the previous look's result as `previous`.

    candidate_/control_latency: (sum, sum of squares) of latency in ms over the arm's outcomes.
    traffic: the candidate's configured share (None: no sample-ratio check); split_counts: the
    (candidate, control) counts since the share last changed (default: the arms' n).
    """
    _check("candidate", candidate_successes, candidate_n)
    _check("control", control_successes, control_n)
    for label, e, n in (("candidate", candidate_errors, candidate_n), ("control", control_errors, control_n)):
        if e < 0 or e > n:
            raise ValueError(f"{label} arm has {e} errors out of {n} outcomes: counts must satisfy 0 <= errors <= n")
    if not 0 < alpha < 1 or not 0 < guardrail_alpha < 1 or not 0 < srm_alpha < 1:
        raise ValueError(f"alpha {alpha}, guardrail_alpha {guardrail_alpha} and srm_alpha {srm_alpha} must be in (0, 1)")
    if tau <= 0 or error_tau <= 0 or latency_tau <= 0:
        raise ValueError("tau, error_tau and latency_tau (mixing standard deviations) must be > 0")
    run = (previous or Running()).model_copy()
    base: dict[str, Any] = dict(
        candidate_n=candidate_n, candidate_successes=candidate_successes,
        control_n=control_n, control_successes=control_successes,
        candidate_rate=candidate_successes / candidate_n if candidate_n else None,
        control_rate=control_successes / control_n if control_n else None,
        alpha=alpha, tau=tau, min_samples=min_samples, min_effect=min_effect,
    )

    srm = None
    if traffic is not None:
        split = split_counts if split_counts is not None else (candidate_n, control_n)
        log_e = run.srm_log_e_before + srm_log_bf(split, (traffic, 1.0 - traffic), srm_concentration)
        run.srm_p = min(run.srm_p, _p(log_e))
        total = split[0] + split[1]
        srm = Srm(traffic=traffic, observed=split[0] / total if total else None, log_e=min(log_e, 1e300),
                  p_value=run.srm_p, detected=run.srm_p <= srm_alpha)

    if candidate_n < min_samples or control_n < min_samples or min(candidate_n, control_n) < 1:
        reason = f"waiting for {min_samples} outcomes per arm"
        decision: Decision = "continue"
        if srm is not None and srm.detected:
            decision, reason = "inconclusive", _srm_reason(srm, srm_alpha)
        return AbResult(decision=decision, reason=reason, srm=srm, running=run, p_value=run.p_value,
                        p_better=run.p_better, p_worse=run.p_worse, low=run.low, high=run.high, **base)

    diff, var = rate_difference(candidate_successes, candidate_n, control_successes, control_n)
    hw = half_width(var, tau, alpha)
    run.low = diff - hw if run.low is None else max(run.low, diff - hw)
    run.high = diff + hw if run.high is None else min(run.high, diff + hw)
    run.p_value = min(run.p_value, _p(log_lr(diff, var, tau)))
    # Promotion is judged on split-robust counts: a publisher that loses the candidate's failures shrinks
    # its count by as much as it inflates its rate, so the missing outcomes are counted back as failures.
    if split_robust and traffic is not None:
        seg = split_counts if split_counts is not None else (candidate_n, control_n)
        s_p, n_p = split_robust_candidate(candidate_successes, candidate_n, traffic, seg)
    else:
        s_p, n_p = candidate_successes, candidate_n
    diff_p, var_p = rate_difference(s_p, n_p, control_successes, control_n)
    hw_p = half_width(var_p, tau, alpha)
    run.promote_low = diff_p - hw_p if run.promote_low is None else max(run.promote_low, diff_p - hw_p)
    if diff_p > min_effect:
        run.p_better = min(run.p_better, _p(log_lr(diff_p - min_effect, var_p, tau)))
    if diff < 0:
        run.p_worse = min(run.p_worse, _p(log_lr(diff, var, tau)))

    guards = [_errors(candidate_errors, candidate_n, control_errors, control_n, max_error_increase,
                      guardrail_alpha, error_tau, run.error_p)]
    if max_latency_ratio is not None and candidate_latency is not None and control_latency is not None:
        lat = _latency(candidate_n, candidate_latency, control_n, control_latency, max_latency_ratio,
                       guardrail_alpha, latency_tau, run.latency_p)
        if lat is not None:
            guards.append(lat)
    for g in guards:
        setattr(run, f"{'error' if g.name == 'errors' else 'latency'}_p", g.p_value)
        g.tripped = g.p_value <= guardrail_alpha  # once tripped, stays tripped (running minimum)

    z = diff / math.sqrt(var)
    control_rate, candidate_rate = base["control_rate"], base["candidate_rate"]
    rates = f"success {candidate_rate:.3f} vs {control_rate:.3f}, difference {diff:+.3f} in [{run.low:+.3f}, {run.high:+.3f}]"
    tripped = [g for g in guards if g.tripped]
    if srm is not None and srm.detected:
        decision, reason = "inconclusive", _srm_reason(srm, srm_alpha)
    elif tripped:
        decision = "rollback"
        reason = "guardrail: " + "; ".join(_guard_reason(g, guardrail_alpha) for g in tripped)
    elif run.p_better <= alpha and any(g.holding for g in guards):
        decision = "continue"
        reason = (f"{rates}: better (always-valid p={run.p_better:.3g}), but promotion waits: the "
                  + " and ".join(g.name for g in guards if g.holding) + " guardrail's data favour harm")
    elif run.p_better <= alpha:
        decision = "promote"
        reason = f"{rates}: better, always-valid p={run.p_better:.3g} <= {alpha}"
    elif run.p_worse <= alpha:
        decision = "rollback"
        reason = f"{rates}: worse, always-valid p={run.p_worse:.3g} <= {alpha}"
    elif max_samples is not None and candidate_n >= max_samples and control_n >= max_samples:
        decision, reason = "inconclusive", f"{rates}: no significant difference after {max_samples} per arm"
    else:
        decision, reason = "continue", rates
    return AbResult(decision=decision, reason=reason, difference=diff, low=run.low, high=run.high, z=z,
                    promotion_low=run.promote_low,
                    p_value=run.p_value, p_better=run.p_better, p_worse=run.p_worse, guardrails=guards, srm=srm,
                    running=run, **base)


def _srm_reason(srm: Srm, srm_alpha: float) -> str:
    observed = "-" if srm.observed is None else f"{srm.observed:.3f}"
    return (f"sample-ratio mismatch: candidate share {observed}, configured {srm.traffic:.3f} "
            f"(always-valid p={srm.p_value:.3g} <= {srm_alpha}); decisions stopped")


def _guard_reason(g: Guardrail, alpha: float) -> str:
    what = "error rate increase" if g.name == "errors" else "latency ratio"
    return (f"{what} {g.estimate:+.3f} in [{g.low:+.3f}, {g.high:+.3f}] above limit {g.limit}"
            if g.name == "errors" else
            f"{what} {g.estimate:.3f} in [{g.low:.3f}, {g.high:.3f}] above limit {g.limit}") + \
        f" (always-valid p={g.p_value:.3g} <= {alpha})"
