"""Metrics, health and traces of a running service, against a real nats-server.

- /health, /ready and /metrics answer on the service's metrics port; the counters count what the
  runner really did;
- /ready fails while NATS is down and recovers when it is back, without a restart;
- one trace across services: the span of a handler is the child of the span that published its event;
- a malformed traceparent starts a new trace and the event is handled normally;
- a metrics port already taken is a clear error.
"""

from __future__ import annotations

import aiohttp
import pytest
from opentelemetry import trace
from prometheus_client.parser import text_string_to_metric_families

from lorafleet.shared.bus import publish_event
from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.events import ArtifactRef, DatasetEnriched, DatasetReady, TrainRequested
from lorafleet.shared.nats_server import NatsServer
from lorafleet.shared.service import Service
from lorafleet.shared.telemetry.tracing import inject_headers, tracer



def request(rid: str) -> TrainRequested:
    return TrainRequested(request_id=rid, adapter_name="python-lora", config={"x": 1}, config_sha256="abc")


def ready_for(event: TrainRequested) -> DatasetReady:
    return event.follow(DatasetReady, adapter_name=event.adapter_name, config={}, config_sha256="c",
                        dataset=ArtifactRef(uri="nats-obj://b/d.tar", sha256="0" * 64))


def two_services() -> tuple[Service, Service]:
    """ingest turns train.requested into dataset.ready; enrich turns that into dataset.enriched."""
    ingest, enrich = Service("ingest"), Service("enrich")

    @ingest.handler(TrainRequested)
    async def on_train_requested(event, ctx):
        if event.adapter_name == "poison":
            raise RuntimeError("bad input")
        return [ready_for(event)]

    @enrich.handler(DatasetReady)
    async def on_dataset_ready(event, ctx):
        return [event.follow(DatasetEnriched, adapter_name=event.adapter_name, config={}, config_sha256="c",
                             dataset=event.dataset)]

    return ingest, enrich


async def scrape(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        async with http.get(f"http://127.0.0.1:{port}{path}") as resp:
            return resp.status, await resp.text()


def samples(text: str, name: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


async def test_health_ready_and_metrics_count_what_the_runner_did(settings, js, h):
    ingest, _ = two_services()
    settings = settings.model_copy(update={"metrics_port": 0, "max_deliver": 2})
    async with ingest.running(settings) as runner:
        port = runner.metrics_port
        assert port and port > 0
        assert (await scrape(port, "/health"))[0] == 200
        status, body = await scrape(port, "/ready")
        assert status == 200 and '"ready": true' in body
        before = samples((await scrape(port, "/metrics"))[1], "lorafleet_events_handled_total")
        for i in range(3):
            await publish_event(js, request(f"r{i}"))
        poison = TrainRequested(request_id="rp", adapter_name="poison", config={}, config_sha256="x")
        await publish_event(js, poison)
        await h.wait_for(lambda: runner.processed == 3, what="three events handled")
        await h.wait_for(lambda: h.subject_counts(js, "lorafleet.v1.dlq.ingest"), what="the poison's dead letter")
        text = (await scrape(port, "/metrics"))[1]
    key = (("event_type", "train.requested"), ("service", "ingest"))
    handled = samples(text, "lorafleet_events_handled_total")
    assert handled[key] - before.get(key, 0) == 3
    published = samples(text, "lorafleet_events_published_total")
    assert published[(("event_type", "dataset.ready"), ("service", "ingest"))] >= 3
    assert samples(text, "lorafleet_events_failed_total")[key] >= 2  # both deliveries of the poison
    assert samples(text, "lorafleet_redeliveries_total")[key] >= 1
    dead = samples(text, "lorafleet_events_dead_lettered_total")
    assert dead[(("reason", "max_deliver"), ("service", "ingest"))] >= 1
    assert samples(text, "lorafleet_handler_duration_seconds_count")[key] >= 5
    assert samples(text, "lorafleet_handlers_in_flight")[(("service", "ingest"),)] == 0


async def test_ready_fails_while_nats_is_down_and_recovers(tmp_path, h):
    from lorafleet.shared.settings import Settings

    server = NatsServer(store_dir=tmp_path / "nats").start()
    try:
        settings = Settings(nats_url=server.url, data_dir=tmp_path / "data", metrics_port=0)
        ingest, _ = two_services()
        async with ingest.running(settings) as runner:
            port = runner.metrics_port
            assert (await scrape(port, "/ready"))[0] == 200
            server.stop()
            await h.wait_for(lambda: _status_is(port, 503), timeout=20, what="/ready to fail with NATS down")
            status, body = await scrape(port, "/ready")
            assert "not connected to NATS" in body
            assert (await scrape(port, "/health"))[0] == 200  # alive all the same
            server = NatsServer(store_dir=tmp_path / "nats", port=server.port).start()
            await h.wait_for(lambda: _status_is(port, 200), timeout=30, what="/ready to recover")
    finally:
        server.stop()


async def _status_is(port: int, expected: int) -> bool:
    return (await scrape(port, "/ready"))[0] == expected


async def test_one_trace_across_services(settings, js, h, span_exporter):
    ingest, enrich = two_services()
    async with ingest.running(settings) as a, enrich.running(settings) as b:
        with tracer().start_as_current_span("client") as root:
            await publish_event(js, request("r-trace"))
        trace_id = root.get_span_context().trace_id
        await h.wait_for(lambda: a.processed == 1 and b.processed == 1, what="both handlers")
    spans = {s.name: s for s in span_exporter.get_finished_spans() if s.context.trace_id == trace_id}
    assert {"client", "ingest train.requested", "enrich dataset.ready"} <= set(spans)
    assert spans["ingest train.requested"].parent.span_id == root.get_span_context().span_id
    assert spans["enrich dataset.ready"].parent.span_id == spans["ingest train.requested"].context.span_id
    assert spans["enrich dataset.ready"].kind == trace.SpanKind.CONSUMER


async def test_a_malformed_traceparent_starts_a_new_trace(settings, js, h, span_exporter):
    ingest, _ = two_services()
    event = request("r-bad")
    async with ingest.running(settings) as runner:
        await js.publish(event.subject(), event.to_bytes(), stream="LORAFLEET",
                         headers={"Nats-Msg-Id": event.event_id, "traceparent": "00-zzzz-not-a-trace-01"})
        await h.wait_for(lambda: runner.processed == 1, what="the event to be handled all the same")
    span = next(s for s in span_exporter.get_finished_spans()
                if s.attributes.get("lorafleet.request_id") == "r-bad")
    assert span.parent is None and span.context.trace_id != 0
    assert await h.messages_on(js, DatasetReady.subject())  # processed normally


async def test_the_published_event_carries_the_traceparent(settings, js, h, span_exporter):
    with tracer().start_as_current_span("client") as root:
        headers = inject_headers({})
    assert headers["traceparent"].split("-")[1] == format(root.get_span_context().trace_id, "032x")
    assert inject_headers({}) == {}  # outside a span nothing is added


async def test_a_metrics_port_already_taken_is_a_clear_error(settings, tmp_path):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        ingest, _ = two_services()
        with pytest.raises(LorafleetError, match=rf"metrics port 127.0.0.1:{taken.getsockname()[1]} is already taken"):
            async with ingest.running(settings.model_copy(update={"metrics_port": taken.getsockname()[1]})):
                pass
    finally:
        taken.close()


