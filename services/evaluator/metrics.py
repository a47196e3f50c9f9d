"""Aggregate judged results into the numbers the gate and the report use.

Definitions (also in docs/evaluator.md and every report.json under `definitions`):
- pass@k: unbiased estimator per problem, averaged over problems.
- error rate: share of sampled completions that never produced an answer:
  no code found, a syntax error, or a runtime error (wrong answers, time and
  memory limits are failures but not errors).
- latency: per request, time to first token (TTFT) and mean time per output
  token after it (TPOT). "Latency increase" compares a request of the base's
  mean output length, from median TTFT and TPOT (robust to a stalled request):
  (TTFT_a + TPOT_a * L) / (TTFT_b + TPOT_b * L) - 1, so a model that merely
  writes longer answers is not counted as slower.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from lorafleet.services.evaluator.compare import paired_bootstrap
from lorafleet.services.evaluator.models import ERROR_KINDS, LatencyRecord, ProblemResult
from lorafleet.services.evaluator.passk import mean_pass_at_k

DEFINITIONS = {
    "pass@k": "unbiased estimator 1 - C(n-c,k)/C(n,k) per problem (n samples, c passed all tests), averaged over problems",
    "greedy_pass@1": "share of problems whose greedy (temperature 0) completion passed all tests",
    "error_rate": "share of sampled completions with no code found, a syntax error or a runtime error",
    "delta_pass@1": "mean over problems of adapter pass@1 - base pass@1, same problems and seeds; "
                    "95% percentile bootstrap CI resampling problems",
    "ttft_s": "time from request start to the first generated token",
    "tpot_s": "mean time per output token after the first",
    "latency_increase": "(TTFT_a + TPOT_a*L) / (TTFT_b + TPOT_b*L) - 1 with median TTFT/TPOT per variant and "
                        "L = mean output tokens of the base; same backend, same load, base and adapter interleaved",
}


def _mean(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.fmean(vals) if vals else None


def _median(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def latency_summary(records: Sequence[LatencyRecord]) -> dict[str, Any]:
    return {
        "requests": len(records),
        "ttft_s_mean": _mean(r.ttft_s for r in records),
        "ttft_s_median": _median(r.ttft_s for r in records),
        "tpot_s_mean": _mean(r.tpot_s for r in records),
        "tpot_s_median": _median(r.tpot_s for r in records),
        "output_tokens_mean": _mean(r.output_tokens for r in records),
    }


def _pass_at_ks(results: Sequence[ProblemResult], ks: Sequence[int]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for k in ks:
        usable = [(r.n, r.correct) for r in results if r.n >= k]
        out[f"pass@{k}"] = mean_pass_at_k(usable, k) if len(usable) == len(results) else None
    return out


def _by(results: Sequence[ProblemResult], key: str) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[ProblemResult]] = {}
    for r in results:
        groups.setdefault(getattr(r, key), []).append(r)
    return {
        name: {"problems": len(rs), "pass@1": mean_pass_at_k([(r.n, r.correct) for r in rs if r.n], 1)}
        for name, rs in sorted(groups.items())
    }


def variant_summary(results: Sequence[ProblemResult], ks: Sequence[int], latency: Sequence[LatencyRecord] = ()) -> dict[str, Any]:
    sampled = [s for r in results for s in r.samples if s.index >= 0]
    verdicts = Counter(s.verdict for s in sampled)
    errors = Counter(s.error for s in sampled if s.error)
    greedy = [r.greedy_passed for r in results if r.greedy_passed is not None]
    summary: dict[str, Any] = {
        "problems": len(results),
        "samples": len(sampled),
        **_pass_at_ks(results, ks),
        "greedy_pass@1": (sum(greedy) / len(greedy)) if greedy else None,
        "error_rate": (sum(errors[k] for k in ERROR_KINDS) / len(sampled)) if sampled else None,
        "errors": {k: errors.get(k, 0) for k in ERROR_KINDS},
        "verdicts": dict(sorted(verdicts.items())),
        "by_difficulty": _by(results, "difficulty"),
        "by_source": _by(results, "source"),
    }
    if latency:
        summary["latency"] = latency_summary(latency)
    return summary


def latency_increase(base: dict[str, Any] | None, adapter: dict[str, Any] | None) -> float | None:
    if not base or not adapter:
        return None
    L = base.get("output_tokens_mean") or 0.0

    def cost(s: dict[str, Any]) -> float | None:
        # medians: one request stalled by an unrelated process must not decide the gate
        if s.get("ttft_s_median") is None:
            return None
        return s["ttft_s_median"] + (s.get("tpot_s_median") or 0.0) * L
    b, a = cost(base), cost(adapter)
    if b is None or a is None or b <= 0:
        return None
    return a / b - 1.0


def summarize(
    results: Sequence[ProblemResult],
    latency: Sequence[LatencyRecord],
    ks: Sequence[int],
    *,
    bootstrap_seed: int = 0,
    resamples: int = 10_000,
) -> dict[str, Any]:
    """Metrics of a base-vs-adapter evaluation (either variant may be missing)."""
    by_variant: dict[str, list[ProblemResult]] = {}
    for r in results:
        by_variant.setdefault(r.variant, []).append(r)
    metrics: dict[str, Any] = {"k": list(ks), "definitions": DEFINITIONS}
    for variant, rs in sorted(by_variant.items()):
        rs.sort(key=lambda r: r.problem_id)
        metrics[variant] = variant_summary(rs, ks, [x for x in latency if x.variant == variant])
    base = {r.problem_id: r for r in by_variant.get("base", [])}
    adapter = {r.problem_id: r for r in by_variant.get("adapter", [])}
    common = sorted(base.keys() & adapter.keys())
    metrics["problems"] = len(common) if base and adapter else max(len(base), len(adapter), len(by_variant.get("samples", [])))
    if common:
        if len(common) != len(base) or len(common) != len(adapter):
            raise ValueError(f"base and adapter were evaluated on different problems ({len(base)} vs {len(adapter)}, {len(common)} shared)")
        delta = paired_bootstrap(
            [base[p].correct / base[p].n for p in common], [adapter[p].correct / adapter[p].n for p in common],
            seed=bootstrap_seed, resamples=resamples,
        )
        metrics["delta_pass@1"] = delta.model_dump()
        if all(base[p].greedy_passed is not None and adapter[p].greedy_passed is not None for p in common):
            metrics["delta_greedy_pass@1"] = paired_bootstrap(
                [float(base[p].greedy_passed) for p in common], [float(adapter[p].greedy_passed) for p in common],
                seed=bootstrap_seed, resamples=resamples,
            ).model_dump()
        metrics["latency_increase"] = latency_increase(
            metrics["base"].get("latency"), metrics["adapter"].get("latency")
        )
        bl, al = metrics["base"].get("latency") or {}, metrics["adapter"].get("latency") or {}
        for key in ("ttft_s_median", "tpot_s_median"):
            if bl.get(key) and al.get(key) is not None:
                metrics[f"{key.removesuffix('_median')}_increase"] = al[key] / bl[key] - 1.0
    return metrics
