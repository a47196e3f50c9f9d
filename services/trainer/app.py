"""The trainer on the bus: dataset.enriched -> (Q)LoRA SFT -> adapter.trained.

Training runs in a worker thread so the event loop keeps sending in-progress acks
and publishing training.progress while it works.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil

from lorafleet.services.trainer.bootstrap import bootstrap
from lorafleet.shared.service import Context, Service
from lorafleet.shared.config import parse_config
from lorafleet.shared.errors import ConfigError
from lorafleet.shared.telemetry import metrics
from lorafleet.shared.telemetry.tracing import tracer
from lorafleet.shared.events import AdapterTrained, DatasetEnriched, Event, StageFailed, TrainingProgress

log = logging.getLogger("lorafleet.trainer")

service = Service("trainer", bootstrap=bootstrap)


def failed(event: DatasetEnriched, error: str, retriable: bool = False) -> StageFailed:
    return event.follow(StageFailed, 0, stage="training", adapter_name=event.adapter_name, error=error,
                        retriable=retriable, input_event_id=event.event_id)


@service.handler(DatasetEnriched)
async def on_dataset_enriched(event: DatasetEnriched, ctx: Context) -> list[Event]:
    from lorafleet.services.trainer.checkpoints import DurableCheckpoints
    from lorafleet.services.trainer.distributed import check_processes, run_distributed
    from lorafleet.services.trainer.train import OutOfMemory, TooFewExamples, TrainJob, train
    from lorafleet.services.trainer.versions import assign_version, version_bucket

    try:
        config = parse_config(event.config, f"dataset.enriched {event.event_id} config")
        if config.training.processes > 1:
            check_processes(config.training.processes)  # before anything is downloaded or started
    except ConfigError as exc:
        return [failed(event, str(exc))]

    deps = ctx.deps
    # Keyed by the input event: a redelivery of this job finds its own checkpoints.
    job_dir = deps.work_root / event.event_id
    checkpoint_dir = deps.checkpoint_root / config.adapter_name / event.event_id
    dataset_dir = await ctx.artifacts.get_dir(event.dataset, job_dir / "dataset")

    # Durable checkpoints under the job's key: a redelivery on any replica (empty disk or not)
    # resumes from the newest one made under this config.
    durable = DurableCheckpoints(ctx.artifacts, f"checkpoints/{config.adapter_name}/{event.event_id}",
                                 keep=config.training.save_total_limit)
    refused = None
    if config.training.resume:
        _, refused = await durable.restore(checkpoint_dir, config.sha256())
    else:
        await durable.clear()
        shutil.rmtree(checkpoint_dir, ignore_errors=True)

    loop = asyncio.get_running_loop()
    upload_failures: list[str] = []
    checkpoint_time = metrics.TRAINER_CHECKPOINT_TIME.labels(service.name, config.adapter_name)

    def on_checkpoint(path) -> None:  # called from the training thread; training waits for the upload
        future = asyncio.run_coroutine_threadsafe(durable.save(path), loop)
        try:
            future.result()
        except Exception as exc:  # noqa: BLE001 - a store hiccup must not end a long run; the next save retries
            log.error("uploading %s failed (%s): a redelivery would resume from the previous one", path.name, exc)
            upload_failures.append(f"{path.name}: {exc}")
        else:
            checkpoint_time.set_to_current_time()

    gauges = {name: gauge.labels(service.name, config.adapter_name) for name, gauge in (
        ("step", metrics.TRAINER_STEP), ("loss", metrics.TRAINER_LOSS), ("tokens_per_second", metrics.TRAINER_TOKENS_PER_S))}

    def on_progress(fields: dict) -> None:  # called from the training thread
        for name, gauge in gauges.items():
            if fields.get(name) is not None:
                gauge.set(fields[name])
        index = fields["step"] * 2 + (1 if "eval_loss" in fields else 0)
        progress = event.follow(TrainingProgress, index, adapter_name=config.adapter_name, **fields)
        future = asyncio.run_coroutine_threadsafe(ctx.publish(progress), loop)
        with contextlib.suppress(Exception):  # a lost progress report must not stop training
            future.result(timeout=10)

    job = TrainJob(config=config, dataset_dir=dataset_dir, output_dir=job_dir / "adapter",
                   checkpoint_dir=checkpoint_dir, on_progress=on_progress, judge=deps.judge,
                   on_checkpoint=on_checkpoint, resume_refused=refused)
    try:
        with tracer().start_as_current_span("trainer.train", attributes={
                "lorafleet.adapter": config.adapter_name, "lorafleet.max_steps": config.training.max_steps,
                "lorafleet.processes": config.training.processes}):
            if config.training.processes > 1:
                result = await asyncio.to_thread(run_distributed, job, config.training.processes)
            else:
                result = await asyncio.to_thread(train, job)
    except (TooFewExamples, OutOfMemory, ConfigError) as exc:
        return [failed(event, str(exc))]

    kv = await version_bucket(ctx.js, replicas=ctx.settings.stream_replicas)
    version = await assign_version(kv, config.adapter_name, event.request_id)
    adapter_ref = await ctx.artifacts.put_dir(result.output_dir, f"adapters/{config.adapter_name}/v{version}")
    eval_problems = None
    if (dataset_dir / "eval_problems.jsonl").is_file():
        eval_problems = await ctx.artifacts.put_file(
            dataset_dir / "eval_problems.jsonl", f"adapters/{config.adapter_name}/v{version}-eval_problems.jsonl")
    trained = event.follow(
        AdapterTrained, 0,
        adapter_name=config.adapter_name,
        version=version,
        adapter=adapter_ref,
        base_model=config.base_model,
        serve_base_model=config.serve_base_model,
        rank=result.rank,
        lora_alpha=result.lora_alpha,
        target_modules=result.target_modules,
        domains=list(config.data.domains),
        metrics={**{k: v for k, v in result.metrics.items() if k != "eval_history"},
                 "checkpoint_upload_failures": len(upload_failures)},
        config=event.config,
        config_sha256=event.config_sha256,
        dataset_sha256=event.dataset.sha256,
        eval_problems=eval_problems,
    )
    log.info("trained %s v%d in %d steps (resumed from %s)", config.adapter_name, version,
             result.metrics["global_step"], result.resumed_from_step)
    # The adapter is in the store now; the scratch space and checkpoints can go.
    shutil.rmtree(job_dir, ignore_errors=True)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    await durable.clear()
    return [trained]
