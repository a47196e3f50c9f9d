"""The ingest service on the bus: train.requested -> dataset.ready, or ingest.failed.

- Sources whose `path` is an artifact URI (the collector's production pool,
  `nats-obj://...` or `file://...`) are fetched into the job's scratch directory first.
- The pipeline runs in a worker thread (it is CPU- and sandbox-bound); the bus
  runner keeps the message alive with in-progress acks meanwhile, and progress
  goes to the log.
- A user-fixable problem (bad config, missing file, too few examples) is an
  `ingest.failed` with retriable=false; anything else raises, so the bus retries
  and finally dead-letters it.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path

from lorafleet.services.ingest.bootstrap import bootstrap
from lorafleet.services.ingest.pipeline import build_dataset
from lorafleet.services.ingest.verify import sandbox_judge
from lorafleet.shared.service import Context, Service
from lorafleet.shared.config import SourceSection, parse_config
from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.events import DatasetReady, Event, StageFailed, TrainRequested

log = logging.getLogger("lorafleet.ingest")

service = Service("ingest", bootstrap=bootstrap)
PROGRESS_EVERY_S = 10.0


def failed(event: TrainRequested, error: str) -> StageFailed:
    return event.follow(StageFailed, 0, stage="ingest", adapter_name=event.adapter_name, error=error,
                        retriable=False, input_event_id=event.event_id)


def extra_sources(event: TrainRequested) -> list[SourceSection]:
    try:
        return [SourceSection(**spec.model_dump(exclude_none=True)) for spec in event.extra_sources]
    except ValueError as exc:
        raise LorafleetError(f"train.requested extra_sources: {exc}") from None


async def fetch_inputs(sources: list[SourceSection], ctx: Context, dest: Path) -> list[SourceSection]:
    """Artifact URIs become local files in the job's scratch directory."""
    out = []
    for i, s in enumerate(sources):
        if s.path and "://" in s.path:
            local = await ctx.artifacts.get_file(s.path, dest / f"{i}-{Path(s.path).name}")
            s = s.model_copy(update={"path": str(local)})
        out.append(s)
    return out


@service.handler(TrainRequested)
async def on_train_requested(event: TrainRequested, ctx: Context) -> list[Event]:
    job_dir = ctx.deps.work_root / event.event_id
    shutil.rmtree(job_dir, ignore_errors=True)  # a redelivery starts clean
    job_dir.mkdir(parents=True)
    last_log = [time.monotonic()]

    def on_progress(source: str, rows: int) -> None:
        if time.monotonic() - last_log[0] >= PROGRESS_EVERY_S:
            last_log[0] = time.monotonic()
            log.info("ingest %s: %s: %d problems read", event.adapter_name, source, rows)

    try:
        data = parse_config(event.config, f"train.requested {event.event_id} config").data
        data = data.model_copy(update={"sources": await fetch_inputs(list(data.sources), ctx, job_dir / "inputs")})
        extra = await fetch_inputs(extra_sources(event), ctx, job_dir / "inputs")
        judge = None
        if data.verify.enabled:
            judge = ctx.deps.judge if data.verify.workers is None else sandbox_judge(data.verify.workers)
        report = await asyncio.to_thread(
            build_dataset, data, judge=judge, out_dir=job_dir / "dataset", extra_sources=extra,
            progress=on_progress, work_dir=job_dir,
        )
        ref = await ctx.artifacts.put_dir(job_dir / "dataset", f"datasets/{event.adapter_name}/{event.event_id}")
    except LorafleetError as exc:
        log.warning("ingest %s failed: %s", event.adapter_name, exc)
        return [failed(event, str(exc))]
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)
    report.pop("out_dir", None)
    log.info("ingest %s: %d problems, %d verified, train %d / eval %d", event.adapter_name,
             report["problems"], report["verified"], report["train"], report["eval"])
    return [event.follow(DatasetReady, 0, adapter_name=event.adapter_name, dataset=ref, stats=report,
                         config=event.config, config_sha256=event.config_sha256)]
