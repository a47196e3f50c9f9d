"""The evaluator on the bus.

adapter.trained      -> plan: spec artifact + KV progress record + one eval.shard_requested per shard
eval.shard_requested -> any replica: generate + judge its problems (base and adapter), result artifact
eval.shard_done      -> CAS on the progress record; the event that completes the set aggregates:
                        metrics, gate, report artifact, adapter.evaluated
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from lorafleet.services.evaluator.bootstrap import KV_BUCKET, Deps, bootstrap
from lorafleet.services.evaluator.evaluate import run_evaluation
from lorafleet.services.evaluator.local import finish
from lorafleet.services.evaluator.models import LatencyRecord, ProblemResult, SamplingParams, ShardResult
from lorafleet.services.evaluator.problems_io import read_problems_jsonl
from lorafleet.services.evaluator.shards import EvalProgress, EvalSpec, plan_shards, record_shard
from lorafleet.shared.service import Context, Service
from lorafleet.shared.config import EvaluationSection, GateSection, parse_config
from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.telemetry import metrics as telemetry
from lorafleet.shared.events import (
    AdapterEvaluated,
    AdapterTrained,
    ArtifactRef,
    EvalShardDone,
    EvalShardRequested,
    Event,
    StageFailed,
    derive_id,
)

log = logging.getLogger("lorafleet.evaluator")
service = Service("evaluator", bootstrap=bootstrap)


def _failed(event: Event, error: str, adapter_name: str | None) -> StageFailed:
    failed = event.follow(StageFailed, 0, stage="evaluation", adapter_name=adapter_name, error=error,
                          retriable=False, input_event_id=event.event_id)
    if isinstance(event, EvalShardRequested):  # every shard of a broken evaluation fails alike: record it once
        failed = failed.model_copy(update={"event_id": derive_id(event.evaluation_id, "evaluation.failed")})
    return failed


async def _kv(ctx: Context):
    from nats.js.api import KeyValueConfig, StorageType
    from nats.js.errors import BucketNotFoundError

    try:
        return await ctx.js.key_value(KV_BUCKET)
    except BucketNotFoundError:  # same config from every replica: creating twice is a no-op
        return await ctx.js.create_key_value(KeyValueConfig(
            bucket=KV_BUCKET, history=1, replicas=ctx.settings.stream_replicas, storage=StorageType.FILE))


async def _put_json(ctx: Context, data: Any, name: str) -> ArtifactRef:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.json"
        path.write_text(json.dumps(data, default=str))
        return await ctx.artifacts.put_file(path, name)


async def _local_file(ctx: Context, ref: ArtifactRef, name: str) -> Path:
    deps: Deps = ctx.deps
    if ref.sha256 not in deps.files:
        deps.files[ref.sha256] = await ctx.artifacts.get_file(ref, deps.work_dir / "files" / f"{ref.sha256[:16]}-{name}")
    return deps.files[ref.sha256]


async def _local_dir(ctx: Context, ref: ArtifactRef) -> Path:
    deps: Deps = ctx.deps
    if ref.sha256 not in deps.files:
        deps.files[ref.sha256] = await ctx.artifacts.get_dir(ref, deps.work_dir / "dirs" / ref.sha256[:16])
    return deps.files[ref.sha256]


async def _load_spec(ctx: Context, ref: ArtifactRef) -> EvalSpec:
    return EvalSpec.model_validate_json((await _local_file(ctx, ref, "spec.json")).read_text())


@service.on_start
async def open_progress_bucket(ctx: Context) -> None:
    await _kv(ctx)


@service.on_stop
async def release(ctx: Context) -> None:
    if ctx.deps is not None:
        await ctx.deps.close_backend()
        ctx.deps.cleanup()


@service.handler(AdapterTrained)
async def on_adapter_trained(event: AdapterTrained, ctx: Context) -> list[Event]:
    try:
        cfg = parse_config(event.config, f"adapter.trained {event.adapter_name} v{event.version} config")
    except LorafleetError as exc:
        return [_failed(event, str(exc), event.adapter_name)]
    ev = cfg.evaluation
    evaluation_id = derive_id(event.event_id, "evaluation")
    if event.eval_problems is not None:
        problems_ref = event.eval_problems
    elif ev.problems:
        if not Path(ev.problems).is_file():
            return [_failed(event, f"evaluation.problems {ev.problems} not found and adapter.trained carries no "
                                   "eval_problems: point it at a Problem JSONL", event.adapter_name)]
        problems_ref = await ctx.artifacts.put_file(ev.problems, f"evaluations/{evaluation_id}/problems.jsonl")
    else:
        return [_failed(event, "no evaluation problems: adapter.trained has no eval_problems and the config sets no "
                               "evaluation.problems", event.adapter_name)]
    try:
        problems = read_problems_jsonl(await _local_file(ctx, problems_ref, "problems.jsonl"))
    except ValueError as exc:
        return [_failed(event, f"evaluation problems {problems_ref.uri} are not Problem JSONL: {exc}", event.adapter_name)]
    ids = [p.id for p in problems][: ev.max_problems or None]
    try:
        shards = plan_shards(ids, ev.shard_size)
    except ValueError as exc:
        return [_failed(event, f"evaluation problems {problems_ref.uri}: {exc}", event.adapter_name)]
    spec = EvalSpec(evaluation_id=evaluation_id, trained=event.model_dump(mode="json"), problems=problems_ref,
                    problem_ids=ids, evaluation=ev.model_dump(mode="json"), gate=cfg.gate.model_dump(mode="json"),
                    shard_count=len(shards))
    spec_ref = await _put_json(ctx, spec.model_dump(mode="json"), f"evaluations/{evaluation_id}/spec.json")
    kv = await _kv(ctx)
    record = EvalProgress(evaluation_id=evaluation_id, shard_count=len(shards), spec=spec_ref)
    try:
        await kv.create(f"eval.{evaluation_id}", record.model_dump_json().encode())
    except KeyWrongLastSequenceError:
        pass  # redelivered: the record exists (maybe with shards already done)
    log.info("evaluation %s of %s v%d: %d problems in %d shards", evaluation_id, event.adapter_name, event.version,
             len(ids), len(shards))
    return [event.follow(EvalShardRequested, i, evaluation_id=evaluation_id, shard_index=i, shard_count=len(shards),
                         problem_ids=shard, spec=spec_ref) for i, shard in enumerate(shards)]


@service.handler(EvalShardRequested)
async def on_eval_shard_requested(event: EvalShardRequested, ctx: Context) -> list[Event]:
    deps: Deps = ctx.deps
    done = await _recorded_result(ctx, event)
    if done is not None:  # redelivered after its result was recorded: don't score the problems again
        return [event.follow(EvalShardDone, 0, evaluation_id=event.evaluation_id, shard_index=event.shard_index,
                             shard_count=event.shard_count, result=done)]
    spec = await _load_spec(ctx, event.spec)
    trained = AdapterTrained.model_validate(spec.trained)
    ev = EvaluationSection.model_validate(spec.evaluation)
    wanted = set(event.problem_ids)
    problems = [p for p in read_problems_jsonl(await _local_file(ctx, spec.problems, "problems.jsonl")) if p.id in wanted]
    if len(problems) != len(wanted):
        return [_failed(event, f"shard {event.shard_index}: {len(wanted) - len(problems)} problems missing from "
                               f"{spec.problems.uri}", trained.adapter_name)]
    try:
        backend = await _backend_for(ctx, trained, ev)
    except LorafleetError as exc:
        return [_failed(event, str(exc), trained.adapter_name)]
    params = SamplingParams(n=ev.n, temperature=ev.temperature, top_p=ev.top_p, max_new_tokens=ev.max_new_tokens, seed=ev.seed)
    started = time.monotonic()
    result = await run_evaluation(problems, backend, params, deps.judge, greedy=ev.greedy, chunk_size=ev.batch_size,
                                  evaluation_id=event.evaluation_id, shard_index=event.shard_index)
    count_shard(result, time.monotonic() - started)
    result.meta["replica"] = deps.replica
    log.info("evaluation %s shard %d/%d: %d problems scored on %s", event.evaluation_id, event.shard_index + 1,
             event.shard_count, len(problems), deps.replica)
    ref = await _put_json(ctx, result.model_dump(mode="json"),
                          f"evaluations/{event.evaluation_id}/shard-{event.shard_index:05d}.json")
    return [event.follow(EvalShardDone, 0, evaluation_id=event.evaluation_id, shard_index=event.shard_index,
                         shard_count=event.shard_count, result=ref)]


async def _recorded_result(ctx: Context, event: EvalShardRequested) -> ArtifactRef | None:
    try:
        entry = await (await _kv(ctx)).get(f"eval.{event.evaluation_id}")
    except KeyNotFoundError:
        return None
    return EvalProgress.model_validate_json(entry.value).done.get(str(event.shard_index))


async def _backend_for(ctx: Context, trained: AdapterTrained, ev: EvaluationSection):
    deps: Deps = ctx.deps
    if ev.backend == "openai":
        name = f"{trained.adapter_name}-v{trained.version}" if ev.load_adapter else trained.adapter_name
        backend = await deps.backend(
            ("openai", ev.endpoint, name), kind="openai", base_model=ev.model or trained.serve_base_model or trained.base_model,
            adapter_name=name, endpoint=ev.endpoint, api_key=os.environ.get(ev.api_key_env),
            concurrency=ev.concurrency, timeout_s=ev.timeout_s, max_retries=ev.max_retries)
        if ev.load_adapter:
            await backend.load_adapter(name, str(await _local_dir(ctx, trained.adapter)))  # type: ignore[attr-defined]
        return backend
    adapter_dir = await _local_dir(ctx, trained.adapter)
    return await deps.backend(
        (ev.backend, trained.base_model, trained.adapter.sha256), kind=ev.backend, base_model=trained.base_model,
        adapter_path=str(adapter_dir), adapter_name=trained.adapter_name, lora_rank=trained.rank,
        batch_size=ev.batch_size, seed=ev.seed)


@service.handler(EvalShardDone)
async def on_eval_shard_done(event: EvalShardDone, ctx: Context) -> list[Event]:
    kv = await _kv(ctx)
    key = f"eval.{event.evaluation_id}"
    while True:  # compare-and-set loop: replicas finishing shards at once never lose an update
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            raise LorafleetError(f"no progress record for evaluation {event.evaluation_id}") from None
        progress = EvalProgress.model_validate_json(entry.value)
        new, aggregate = record_shard(progress, event.shard_index, event.result, event.event_id)
        if new == progress:
            break
        try:
            await kv.update(key, new.model_dump_json().encode(), last=entry.revision)
            break
        except KeyWrongLastSequenceError:
            continue
    if not aggregate:
        return []
    return [await _aggregate(ctx, new)]


async def _aggregate(ctx: Context, progress: EvalProgress) -> AdapterEvaluated:
    log.info("aggregating evaluation %s (%d shards)", progress.evaluation_id, progress.shard_count)
    shards = [ShardResult.model_validate_json((await _local_file(ctx, ref, f"shard-{i}.json")).read_text())
              for i, ref in sorted(progress.done.items(), key=lambda kv: int(kv[0]))]
    first = shards[0]
    spec = await _load_spec(ctx, progress.spec)
    trained = AdapterTrained.model_validate(spec.trained)
    ev = EvaluationSection.model_validate(spec.evaluation)
    gate = GateSection.model_validate(spec.gate)
    results: list[ProblemResult] = [r for s in shards for r in s.problems]
    latency: list[LatencyRecord] = [x for s in shards for x in s.latency]
    meta = {"adapter_name": trained.adapter_name, "version": trained.version, "base_model": trained.base_model,
            "backend": first.backend, "evaluation_id": progress.evaluation_id, "shards": len(shards),
            "replicas": sorted({s.meta.get("replica", "?") for s in shards}), "problems": len(spec.problem_ids),
            "n": ev.n, "temperature": ev.temperature, "top_p": ev.top_p, "max_new_tokens": ev.max_new_tokens, "seed": ev.seed}
    with tempfile.TemporaryDirectory() as tmp:
        metrics, criteria, path = finish(results, latency, ev.k, gate, meta, Path(tmp) / "report",
                                         resamples=ev.bootstrap_resamples, seed=ev.seed)
        report = await ctx.artifacts.put_dir(path, f"evaluations/{progress.evaluation_id}/report.tar")
    compact = {k: v for k, v in metrics.items() if k != "definitions"}
    for variant in ("base", "adapter"):
        if (compact.get(variant) or {}).get("pass@1") is not None:
            telemetry.EVAL_PASS_AT_1.labels(service.name, trained.adapter_name, variant).set(compact[variant]["pass@1"])
    log.info("evaluation %s of %s v%d: gate %s", progress.evaluation_id, trained.adapter_name, trained.version,
             "passed" if all(c.passed for c in criteria) and criteria else "failed")
    return trained.follow(
        AdapterEvaluated, 0, adapter_name=trained.adapter_name, version=trained.version, adapter=trained.adapter,
        base_model=trained.base_model, serve_base_model=trained.serve_base_model, rank=trained.rank,
        target_modules=trained.target_modules, domains=trained.domains,
        gate_passed=bool(criteria) and all(c.passed for c in criteria), gate=criteria, metrics=compact, report=report,
    )


def count_shard(result: ShardResult, seconds: float) -> None:
    """Prometheus: completions generated (and their rate) per model variant, sandbox runs by verdict."""
    samples: dict[str, int] = {}
    for problem in result.problems:
        samples[problem.variant] = samples.get(problem.variant, 0) + len(problem.samples)
        for sample in problem.samples:
            telemetry.SANDBOX_RUNS.labels(service.name, sample.verdict).inc()
    for variant, count in samples.items():
        telemetry.EVAL_SAMPLES.labels(service.name, variant).inc(count)
        telemetry.EVAL_SAMPLES_PER_S.labels(service.name, variant).set(count / max(seconds, 1e-9))
