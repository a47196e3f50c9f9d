"""Evaluations without the bus: what `lorafleet eval run` / `eval score` do, and
what the service does per shard and at aggregation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lorafleet.services.evaluator.gate import evaluate_gate
from lorafleet.services.evaluator.metrics import summarize
from lorafleet.services.evaluator.models import LatencyRecord, ProblemResult
from lorafleet.services.evaluator.problems_io import problem_index
from lorafleet.services.evaluator.report import build_report, write_report
from lorafleet.services.evaluator.scoring import Completion, JudgeFn, Mode, score
from lorafleet.shared.config import GateSection
from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.events import GateCriterion
from lorafleet.shared.problems import Problem


async def score_samples(
    problems: list[Problem], samples: list[dict[str, Any]], judge: JudgeFn, mode: Mode = "auto",
) -> list[ProblemResult]:
    """Judge given completions; only problems that have samples are scored."""
    index = problem_index(problems)
    unknown = sorted({s["problem_id"] for s in samples if s["problem_id"] not in index})
    if unknown:
        raise LorafleetError(f"{len(unknown)} sample problem_ids are not in the problems file, e.g. {unknown[:3]} "
                             "(is --problems the right set?)")
    counters: dict[str, int] = {}
    completions = []
    for s in samples:
        pid = index[s["problem_id"]].id
        i = counters.get(pid, 0)
        counters[pid] = i + 1
        completions.append(Completion(pid, "samples", i, s["completion"]))
    return await score({p.id: p for p in problems}, completions, judge, mode)


def finish(
    results: Sequence[ProblemResult],
    latency: Sequence[LatencyRecord],
    ks: Sequence[int],
    gate: GateSection | None,
    meta: dict[str, Any],
    out_dir: str | Path | None,
    *,
    resamples: int = 10_000,
    seed: int = 0,
) -> tuple[dict[str, Any], list[GateCriterion], Path | None]:
    """Metrics, the gate (when both variants ran) and the report directory."""
    metrics = summarize(results, latency, ks, bootstrap_seed=seed, resamples=resamples)
    criteria = evaluate_gate(metrics, gate) if gate is not None and "delta_pass@1" in metrics else []
    path = None
    if out_dir is not None:
        path = write_report(out_dir, build_report(metrics, list(results), criteria, meta), list(results))
    return metrics, criteria, path
