"""SIGKILL each service once in the middle of a pipeline run: the run still completes,
with exactly one registry entry (one version) and one outcome per stage.

Every service runs as its own `lorafleet serve` process on a real nats-server. When
a service's input event appears, that service is SIGKILLed (mid-handling: the
message is unacked) and restarted; JetStream redelivers after ack_wait and the new
process finishes the job. Nats-Msg-Id dedup + idempotent handlers must keep every
outcome single.
"""

from __future__ import annotations

import asyncio
import time

import nats
import pytest

from lorafleet.shared.bus import SERVICES, ensure_stream, publish_event
from lorafleet.shared.events import STREAM, TrainRequested
from lorafleet.shared.settings import Settings

from conftest import tiny_pipeline_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

# The event that hands work to each service.
INPUT_OF = {"ingest": "train.requested", "enrich": "dataset.ready", "trainer": "dataset.enriched",
            "evaluator": "adapter.trained", "registry": "adapter.evaluated"}
OUTPUT_OF = {"ingest": "dataset.ready", "enrich": "dataset.enriched", "trainer": "adapter.trained",
             "evaluator": "adapter.evaluated"}


async def _unique_in_stream(js, event_type: str) -> list[dict]:
    """Messages of one type in the stream (what a consumer would see), not core-NATS publishes."""
    import json

    from nats.js import api

    info = await js.stream_info(STREAM, subjects_filter=f"lorafleet.v1.{event_type}")
    total = sum((info.state.subjects or {}).values())
    out = []
    if total:
        sub = await js.subscribe(f"lorafleet.v1.{event_type}", ordered_consumer=True,
                                 config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL))
        try:
            while len(out) < total:
                out.append(json.loads((await sub.next_msg(timeout=5)).data))
        finally:
            await sub.unsubscribe()
    return out


async def test_sigkill_each_service_once_and_the_run_completes_once(nats_url, fleet, events, tmp_path):
    assert set(INPUT_OF) == set(SERVICES)
    settings = Settings(nats_url=nats_url, data_dir=tmp_path / "data")
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        await ensure_stream(js, settings)
        for service in SERVICES:
            fleet.start(service)
        cfg = tiny_pipeline_config()
        request = TrainRequested(request_id="e2e-kill", adapter_name=cfg["adapter_name"], config=cfg,
                                 config_sha256="e2e", reason="manual")
        await publish_event(js, request)

        killed: dict[str, float] = {}
        deadline = time.monotonic() + 360
        while time.monotonic() < deadline and len(killed) < len(SERVICES):
            failed = [d for t, d in events.items if t.endswith(".failed")]
            assert not failed, f"{failed}\n{fleet.logs()}"
            for service, input_type in INPUT_OF.items():
                if service not in killed and events.of(input_type):
                    await asyncio.sleep(0.3)  # let it pick the message up: the kill lands mid-handling
                    (replica,) = fleet.of(service)
                    fleet.kill(replica)
                    killed[service] = time.monotonic()
                    await asyncio.sleep(0.5)
                    fleet.restart(replica)
            if any(t in ("adapter.registered", "adapter.rejected") for t in events.types()) and "registry" in killed:
                break
            await asyncio.sleep(0.1)
        assert set(killed) == set(SERVICES), f"only {sorted(killed)} were killed; saw {events.types()}\n{fleet.logs()}"

        outcome = None
        while time.monotonic() < deadline:
            done = events.of("adapter.registered") + events.of("adapter.rejected")
            if done:
                outcome = done
                break
            failed = [t for t in events.types() if t.endswith(".failed")]
            assert not failed, f"{failed}: {[d for t, d in events.items if t in failed]}\n{fleet.logs()}"
            await asyncio.sleep(0.2)
        assert outcome, f"no registry outcome; saw {events.types()}\n{fleet.logs()}"
        await asyncio.sleep(3.0)  # a duplicate from a redelivered job would land now

        for service, output in OUTPUT_OF.items():
            in_stream = await _unique_in_stream(js, output)
            assert len(in_stream) == 1, f"{service}: {len(in_stream)} x {output} in the stream"
        registered = await _unique_in_stream(js, "adapter.registered")
        rejected = await _unique_in_stream(js, "adapter.rejected")
        assert len(registered) + len(rejected) == 1, (registered, rejected)

        from lorafleet.services.registry.model import AdapterState
        from lorafleet.services.registry.settings import RegistrySettings

        kv = await js.key_value(RegistrySettings().bucket)
        state = AdapterState.model_validate_json((await kv.get(f"adapter.{cfg['adapter_name']}")).value)
        assert list(state.versions) == [1], f"versions {list(state.versions)}"
        assert all(r.kills == 1 for r in fleet.replicas)
    finally:
        await nc.close()
