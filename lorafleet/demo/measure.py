"""pass@1 of base, v1 and v2 on the held-out production slice, with 95% CIs.

Generation and judging are the evaluator's own (`run_evaluation` with the
transformers backend, the sandbox judge); the CIs are its percentile bootstrap over
problems (`paired_bootstrap`): a single model's CI is that of its difference to zero,
and v2 − v1 is paired on the same problems with the same sampling seeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lorafleet.demo.production import MAX_TOKENS, SLICE_SAMPLES, TEMPERATURE
from lorafleet.services.evaluator.compare import paired_bootstrap
from lorafleet.shared.problems import Problem

RESAMPLES = 10_000


def _ci(scores: Sequence[float], seed: int) -> dict[str, Any]:
    d = paired_bootstrap([0.0] * len(scores), scores, resamples=RESAMPLES, seed=seed)
    return {"pass_at_1": d.mean, "ci95": [d.low, d.high], "n_problems": d.problems}


def slice_report(scores: Mapping[str, Mapping[str, float]], seed: int = 0) -> dict[str, Any]:
    """scores: model ("base", "v1", "v2") -> problem id -> per-problem pass@1 (correct / n).
    Returns each model's pass@1 with its CI and, when v1 and v2 are there, delta_v2_v1."""
    out: dict[str, Any] = {}
    ids = sorted(next(iter(scores.values())).keys()) if scores else []
    for name, per_problem in scores.items():
        if sorted(per_problem) != ids:
            raise ValueError(f"{name} was measured on other problems than the rest ({len(per_problem)} vs {len(ids)})")
        out[name] = _ci([per_problem[p] for p in ids], seed)
    if "v1" in scores and "v2" in scores:
        d = paired_bootstrap([scores["v1"][p] for p in ids], [scores["v2"][p] for p in ids],
                             resamples=RESAMPLES, seed=seed)
        out["delta_v2_v1"] = {"mean": d.mean, "ci95": [d.low, d.high], "n_problems": d.problems}
    return out


def improved(report: Mapping[str, Any]) -> bool:
    """The retrain measurably learned: the CI of v2 − v1 lies above zero."""
    delta = report.get("delta_v2_v1")
    return bool(delta) and delta["ci95"][0] > 0


async def measure_slice(base_dir: str | Path, adapters: Mapping[str, str | Path], problems: Sequence[Problem], *,
                        n: int = SLICE_SAMPLES, temperature: float = TEMPERATURE, max_new_tokens: int = MAX_TOKENS, seed: int = 0,
                        batch_size: int = 16, judge: Any = None) -> dict[str, dict[str, float]]:
    """Per-problem sampled pass@1 of the base and of each adapter (name -> adapter dir).
    The base runs once, beside the first adapter; every model draws the same seeds."""
    from lorafleet.services.evaluator.backends.transformers import TransformersBackend
    from lorafleet.services.evaluator.evaluate import run_evaluation
    from lorafleet.services.evaluator.judging import make_judge
    from lorafleet.services.evaluator.models import SamplingParams

    judge = judge or make_judge()
    params = SamplingParams(n=n, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
    scores: dict[str, dict[str, float]] = {}
    for i, (name, path) in enumerate(adapters.items()):
        backend = TransformersBackend(base_dir, path, batch_size=batch_size)
        try:
            variants = ("base", "adapter") if i == 0 else ("adapter",)
            shard = await run_evaluation(list(problems), backend, params, judge, variants=variants, greedy=False)
        finally:
            await backend.aclose()
        for r in shard.problems:
            scores.setdefault("base" if r.variant == "base" else name, {})[r.problem_id] = r.correct / r.n
    return scores
