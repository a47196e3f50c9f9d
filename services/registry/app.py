"""The registry service on the bus.

- adapter.evaluated → register (candidate + A/B test) or reject; events via the entry's outbox.
- production.outcome → the collector (training pool). Counting for the A/B tests
  is done in batches by the OutcomeRecorder (exactly once per stream message),
  started here with the router (KV watch + request-reply) and the retrain schedule.
"""

from __future__ import annotations

import asyncio
import logging

from lorafleet.shared.bus import dlq_subject
from lorafleet.shared.dead_letters import make_dead_letter
from lorafleet.shared.service import Context, Service
from lorafleet.shared.telemetry.tracing import inject_headers
from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.events import STREAM, AdapterEvaluated, Event, ProductionOutcome, StageFailed, TrainRequested

from . import core
from .bootstrap import bootstrap
from .collector import Collector
from .outcomes import OutcomeRecorder
from .routing import Router
from .store import RegistryStore, now

log = logging.getLogger(__name__)
service = Service("registry", bootstrap=bootstrap, concurrency=64)


@service.on_start
async def start_registry(ctx: Context) -> None:
    deps = ctx.deps
    deps.store = await RegistryStore.open(ctx.js, deps.settings, replicas=ctx.settings.stream_replicas,
                                          publish_timeout=ctx.settings.publish_timeout_s)
    swept = await deps.store.flush_all()  # events a crashed replica wrote but never published
    if swept:
        log.info("published %d pending registry events left by an earlier process", swept)
    deps.router = await Router(deps.store.kv).start()
    await deps.router.serve_requests(ctx.nc)
    deps.recorder = await OutcomeRecorder(deps.store).start()
    deps.collector = await Collector.open(deps.store, ctx.artifacts, deps.verify, replicas=ctx.settings.stream_replicas)
    deps.stop = asyncio.Event()
    deps.background.append(asyncio.create_task(deps.collector.run_schedule(deps.stop)))


@service.on_stop
async def stop_registry(ctx: Context) -> None:
    deps = ctx.deps
    if getattr(deps, "stop", None) is not None:
        deps.stop.set()
    for task in deps.background:
        task.cancel()
    await asyncio.gather(*deps.background, return_exceptions=True)
    for part in (deps.recorder, deps.router):
        if part is not None:
            await part.stop()


@service.handler(AdapterEvaluated)
async def on_adapter_evaluated(event: AdapterEvaluated, ctx: Context) -> list[Event]:
    deps = ctx.deps
    store: RegistryStore = deps.store
    try:
        existing, _ = await store.get(core.check_name(event.adapter_name))
        if core.already_registered(existing, event):
            await store.flush(event.adapter_name)  # redelivery: make sure its events went out
            return []
        info, train_config = await deps.fetch_adapter(ctx.artifacts, event.adapter)
        if train_config is None:  # retrains reuse it; the chain's train.requested has it
            train_config = await find_train_config(ctx.js, event.request_id)
        lora_int_id = await store.next_lora_int_id() if event.gate_passed else None
        trace_context = inject_headers({})  # this delivery's span: the run's trace, for a later retrain's link
        await store.apply(event.adapter_name, lambda s: core.register(
            s, event, info, lora_int_id, now(), deps.settings, train_config, trace_context))
    except LorafleetError as exc:  # bad input (not transient): report it, dead-letter it, change nothing
        log.error("adapter.evaluated %s v%s not registered: %s", event.adapter_name, event.version, exc)
        await dead_letter(ctx, event, str(exc))
        return [event.follow(StageFailed, 0, stage="registry", adapter_name=event.adapter_name, error=str(exc),
                             retriable=False, input_event_id=event.event_id)]
    return []


async def find_train_config(js, request_id: str) -> dict | None:
    """The config of the train.requested that started this chain (same request_id), if still in the stream."""
    subject = TrainRequested.subject()
    try:
        info = await js.stream_info(STREAM, subjects_filter=subject)
        if not (info.state.subjects or {}).get(subject):
            return None
        sub = await js.subscribe(subject, stream=STREAM, ordered_consumer=True)
    except Exception:
        return None
    found = None
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except Exception:  # nothing more
                break
            try:
                ev = TrainRequested.model_validate_json(msg.data)
            except ValueError:
                ev = None
            if ev is not None and ev.request_id == request_id:
                found = ev.config
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return found


async def dead_letter(ctx: Context, event: Event, error: str) -> None:
    letter = make_dead_letter(service.name, ctx.msg, "rejected", error, event)
    headers = {"Lorafleet-Dlq-Reason": "rejected"}
    if letter.stream_seq:
        headers["Nats-Msg-Id"] = f"dlq:{service.name}:{letter.stream_seq}"
    await ctx.js.publish(dlq_subject(service.name), letter.model_dump_json().encode(), stream=STREAM, headers=headers)


@service.handler(ProductionOutcome)
async def on_production_outcome(event: ProductionOutcome, ctx: Context) -> None:
    result = await ctx.deps.collector.on_outcome(event)
    if result != "added" and not result.startswith("skipped"):
        log.info("outcome %s: %s", event.event_id, result)
