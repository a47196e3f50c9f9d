"""The enrich service on the bus: dataset.ready -> reasoning traces -> dataset.enriched.

- No endpoint configured (config nor env): the same dataset artifact goes on, stats `skipped`.
- The endpoint is down (nothing answered through a whole retry window, or too many
  examples failed): an `enrich.failed` with retriable=true is published and the
  message is nak'ed, so the bus redelivers it later; the answer cache makes the
  retry pay only for what is missing. After max_deliver the bus dead-letters it.
- A bad API key, an unknown model, a broken config or dataset: `enrich.failed`,
  retriable=false, no retry.
"""

from __future__ import annotations

import logging
import shutil
import time

from lorafleet.services.enrich import core
from lorafleet.services.enrich.bootstrap import bootstrap
from lorafleet.services.enrich.client import EndpointDown
from lorafleet.services.enrich.dataset import enrich_dataset
from lorafleet.services.enrich.pipeline import resolve_target
from lorafleet.shared.service import Context, Service
from lorafleet.shared.config import parse_config
from lorafleet.shared.errors import LorafleetError, RetriableError
from lorafleet.shared.events import DatasetEnriched, DatasetReady, Event, StageFailed

log = logging.getLogger("lorafleet.enrich")

service = Service("enrich", bootstrap=bootstrap)
PROGRESS_EVERY_S = 10.0


def failed(event: DatasetReady, error: str, retriable: bool, index: int = 0) -> StageFailed:
    return event.follow(StageFailed, index, stage="enrich", adapter_name=event.adapter_name, error=error,
                        retriable=retriable, input_event_id=event.event_id)


def enriched(event: DatasetReady, dataset, stats: dict) -> DatasetEnriched:
    return event.follow(DatasetEnriched, 0, adapter_name=event.adapter_name, dataset=dataset,
                        stats={**stats, "ingest": event.stats}, config=event.config, config_sha256=event.config_sha256)


def _delivery(ctx: Context) -> int:
    try:
        return ctx.msg.metadata.num_delivered  # type: ignore[union-attr]
    except Exception:
        return 1


@service.handler(DatasetReady)
async def on_dataset_ready(event: DatasetReady, ctx: Context) -> list[Event]:
    try:
        cfg = parse_config(event.config, f"dataset.ready {event.event_id} config").enrich
        target = resolve_target(cfg)
    except LorafleetError as exc:
        return [failed(event, str(exc), retriable=False)]
    if target is None:
        log.info("enrich %s: no endpoint configured, dataset passes through unchanged", event.adapter_name)
        return [enriched(event, event.dataset, core.skipped_stats("no enrich.endpoint configured"))]

    job_dir = ctx.deps.work_root / event.event_id
    last_log = [time.monotonic()]

    def on_progress(stats: core.Stats) -> None:
        if time.monotonic() - last_log[0] >= PROGRESS_EVERY_S:
            last_log[0] = time.monotonic()
            log.info("enrich %s: %d done %s", event.adapter_name, stats.total, dict(stats.outcomes))

    try:
        src = await ctx.artifacts.get_dir(event.dataset, job_dir / "dataset")
        stats = await enrich_dataset(src, job_dir / "enriched", cfg, target, ctx.deps.cache, progress=on_progress)
        ref = await ctx.artifacts.put_dir(job_dir / "enriched", f"datasets/{event.adapter_name}/{event.event_id}-enriched")
    except EndpointDown as exc:
        # Published per delivery (distinct ids), then nak'ed: the bus retries with its growing delay.
        await ctx.publish(failed(event, str(exc), retriable=True, index=_delivery(ctx)))
        raise RetriableError(str(exc)) from None
    except LorafleetError as exc:  # auth, unknown model, bad dataset: retrying can't help
        return [failed(event, str(exc), retriable=False)]
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)
    log.info("enrich %s: %s", event.adapter_name, {k: stats[k] for k in ("generated", "cached", "rejected", "failed")})
    return [enriched(event, ref, stats)]
