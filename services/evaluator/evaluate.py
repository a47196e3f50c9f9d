"""Run an evaluation: prompts from the trainer's rendering, samples from a
backend, programs judged by the sandbox, for the base and the adapter on the
same problems with the same seeds.

Problems go in chunks; while the backend generates chunk i+1 (in a thread),
the sandbox judges chunk i, so neither waits for the other. Within a chunk the
order base/adapter alternates, so slow drift in machine load (other jobs, thermal)
hits both variants alike in the latency figures.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Sequence

from lorafleet.services.evaluator.backends.base import Backend
from lorafleet.services.evaluator.models import GenRequest, LatencyRecord, SamplingParams, ShardResult, Variant
from lorafleet.services.evaluator.scoring import Completion, JudgeFn, score
from lorafleet.shared.problems import Problem
from lorafleet.shared.telemetry.tracing import tracer


def request_seed(seed: int, problem_id: str) -> int:
    """Stable per problem (not per position), so shards and reruns draw the same samples."""
    return (seed * 1_000_003 + zlib.crc32(problem_id.encode())) % (2**31 - 1)


def build_request(problem: Problem, seed: int) -> GenRequest:
    from lorafleet.shared.prompts import render_messages

    return GenRequest(problem_id=problem.id, messages=render_messages(problem.statement, starter_code=problem.starter_code),
                      seed=request_seed(seed, problem.id))


async def run_evaluation(
    problems: Sequence[Problem],
    backend: Backend,
    params: SamplingParams,
    judge: JudgeFn,
    *,
    variants: Sequence[Variant] = ("base", "adapter"),
    greedy: bool = True,
    chunk_size: int = 8,
    evaluation_id: str = "local",
    shard_index: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
) -> ShardResult:
    if not problems:
        raise ValueError("no problems to evaluate")
    by_id = {p.id: p for p in problems}
    if len(by_id) != len(problems):
        raise ValueError("problem ids must be unique within an evaluation")
    latency: list[LatencyRecord] = []
    judging: list[asyncio.Task] = []
    done = 0
    try:
        for c, start in enumerate(range(0, len(problems), chunk_size)):
            chunk = problems[start:start + chunk_size]
            requests = [build_request(p, params.seed) for p in chunk]
            completions: list[Completion] = []
            order = list(variants) if c % 2 == 0 else list(reversed(variants))
            for variant in order:
                with tracer().start_as_current_span("model.generate", attributes={
                        "lorafleet.variant": variant, "lorafleet.requests": len(requests), "lorafleet.n": params.n}):
                    gens = await backend.generate(requests, variant, params)
                for req, gen in zip(requests, gens, strict=True):
                    latency.append(LatencyRecord(variant=variant, ttft_s=gen.ttft_s, tpot_s=gen.tpot_s,
                                                 output_tokens=round(sum(gen.output_tokens) / max(1, len(gen.output_tokens)))))
                    completions += [Completion(req.problem_id, variant, i, t, n) for i, (t, n) in enumerate(zip(gen.texts, gen.output_tokens))]
                if greedy:
                    with tracer().start_as_current_span("model.generate", attributes={
                            "lorafleet.variant": variant, "lorafleet.requests": len(requests), "lorafleet.greedy": True}):
                        greedy_gens = await backend.generate(requests, variant, params.greedy())
                    for req, gen in zip(requests, greedy_gens, strict=True):
                        completions.append(Completion(req.problem_id, variant, -1, gen.texts[0], gen.output_tokens[0]))
            judging.append(asyncio.create_task(_judged(by_id, completions, judge)))
            done += len(chunk)
            if on_progress:
                on_progress(done, len(problems))
        results = [r for batch in await asyncio.gather(*judging) for r in batch]
    finally:
        for t in judging:
            t.cancel()
    return ShardResult(evaluation_id=evaluation_id, shard_index=shard_index, problems=results, latency=latency,
                       backend=backend.name, meta={"params": params.model_dump(), "greedy": greedy})


async def _judged(by_id: dict, completions: list, judge: JudgeFn) -> list:
    """One chunk's programs through the sandbox, as a child span of the evaluation."""
    with tracer().start_as_current_span("sandbox.judge", attributes={"lorafleet.programs": len(completions)}):
        return await score(by_id, completions, judge)
