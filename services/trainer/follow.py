"""`lorafleet train`: publish train.requested, then follow that request's events."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

from lorafleet.shared.config import TrainConfig
from lorafleet.shared.events import SUBJECT_PREFIX, Event, StageFailed, TrainRequested, parse_event


def make_request(cfg: TrainConfig, reason: str = "manual") -> TrainRequested:
    event_id = str(uuid.uuid4())
    return TrainRequested(event_id=event_id, request_id=event_id, adapter_name=cfg.adapter_name,
                          config=cfg.model_dump(mode="json"), config_sha256=cfg.sha256(), reason=reason)


async def request_training(js, settings, cfg: TrainConfig) -> tuple[TrainRequested, int]:
    """Publish train.requested; returns it and its stream sequence (where following starts)."""
    from lorafleet.shared.bus import ensure_stream, publish_event

    from lorafleet.shared.telemetry.tracing import configure_tracing, shutdown_tracing, tracer

    await ensure_stream(js, settings)
    event = make_request(cfg)
    exporting = configure_tracing("cli")
    # The root span of the run: every service's span for this request is its descendant.
    with tracer().start_as_current_span("train.requested", attributes={
            "lorafleet.request_id": event.request_id, "lorafleet.adapter": cfg.adapter_name}):
        ack = await publish_event(js, event, timeout=settings.publish_timeout_s)
    if exporting:
        shutdown_tracing()
    return event, ack.seq


async def follow_request(js, request_id: str, start_seq: int) -> AsyncIterator[Event]:
    """Every event of `request_id` from stream sequence `start_seq` on, as they arrive."""
    from nats.js import api

    sub = await js.subscribe(f"{SUBJECT_PREFIX}.>", ordered_consumer=True, config=api.ConsumerConfig(
        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start_seq))
    try:
        async for msg in sub.messages:
            try:
                if json.loads(msg.data).get("request_id") != request_id:
                    continue
                yield parse_event(msg.subject, msg.data)
            except ValueError:  # dead letters and foreign payloads: not ours to show
                continue
    finally:
        await sub.unsubscribe()


def kind(event: Event) -> str:
    """The event type as on its subject (`training.failed`, not StageFailed's generic name)."""
    return event.failed_type if isinstance(event, StageFailed) else event.event_type


def describe(event: Event) -> str:
    t = kind(event)
    if t == "training.progress":
        parts = []
        if event.loss is not None:
            parts.append(f"loss {event.loss:.3f}")
        if event.eval_loss is not None:
            parts.append(f"eval_loss {event.eval_loss:.3f}")
        if event.eval_pass_at_1 is not None:
            parts.append(f"pass@1 {event.eval_pass_at_1:.2f}")
        if event.tokens_per_second:
            parts.append(f"{event.tokens_per_second:.0f} tok/s")
        return "  ".join(parts)
    if t.endswith(".failed"):
        return f"[red]{t}[/red]: {event.error}" + (" (will retry)" if event.retriable else "")
    if t == "adapter.trained":
        return f"adapter.trained {event.adapter_name} v{event.version} r={event.rank} -> {event.adapter.uri}"
    if t == "adapter.evaluated":
        verdict = "[green]gate passed[/green]" if event.gate_passed else "[yellow]gate failed[/yellow]"
        failed = [c.name for c in event.gate if not c.passed]
        return (f"adapter.evaluated {event.adapter_name} v{event.version}: {verdict}"
                + (f" ({', '.join(failed)})" if failed else ""))
    if t in ("dataset.ready", "dataset.enriched"):
        return f"{t}: {json.dumps(event.stats)[:200]}"
    return t
