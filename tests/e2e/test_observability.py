"""One tiny pipeline run, every service its own process, observed as an operator would.

Each process serves /health, /ready and /metrics on its own port; the handled-event counters equal
the events of the run in the stream; every service exports its spans over OTLP/HTTP to a real local
receiver, and the spans of ingest, enrich, trainer, evaluator and registry all carry the run's trace id.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import nats
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client.parser import text_string_to_metric_families

from lorafleet.fleet import SERVICES
from lorafleet.shared.bus import ensure_stream, publish_event
from lorafleet.shared.events import TrainRequested
from lorafleet.shared.nats_server import free_port
from lorafleet.shared.settings import Settings

from e2e_support import Fleet, tiny_pipeline_config, unique_in_stream

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]


class OtlpReceiver:
    """A real OTLP/HTTP trace endpoint on loopback: decodes each export and keeps the spans."""

    def __init__(self) -> None:
        self.spans: list[dict] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> "OtlpReceiver":
        async def traces(request: web.Request) -> web.Response:
            export = ExportTraceServiceRequest.FromString(await request.read())
            for rs in export.resource_spans:
                service = next(a.value.string_value for a in rs.resource.attributes if a.key == "service.name")
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        self.spans.append({"service": service, "name": span.name, "trace_id": span.trace_id.hex(),
                                           "parent": span.parent_span_id.hex()})
            return web.Response(body=b"", content_type="application/x-protobuf")

        app = web.Application()
        app.router.add_post("/v1/traces", traces)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def handled(text: str) -> dict[str, float]:
    """lorafleet_events_handled_total by event type."""
    return {s.labels["event_type"]: s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "lorafleet_events_handled_total"}


async def get(http: aiohttp.ClientSession, port: int, path: str) -> tuple[int, str]:
    async with http.get(f"http://127.0.0.1:{port}{path}") as resp:
        return resp.status, await resp.text()


async def test_a_pipeline_run_is_measured_and_traced(nats_url, tmp_path, events):
    receiver = await OtlpReceiver().start()
    fleet = Fleet(nats_url, tmp_path / "data", env={
        "LORAFLEET_ACK_WAIT_S": "30", "LORAFLEET_MAX_DELIVER": "6", "LORAFLEET_RETRY_DELAY_S": "0.5",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "200"})
    ports = {service: free_port() for service in SERVICES}
    nc = None
    try:
        for service in SERVICES:
            fleet.start(service, env={"LORAFLEET_METRICS_PORT": str(ports[service])})
        settings = Settings(nats_url=nats_url, data_dir=tmp_path / "data")
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        await ensure_stream(js, settings)
        # The run's root span, exported by this test process to the same receiver.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        # Batch: exports from its own thread (the receiver answers on this test's event loop).
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{receiver.url}/v1/traces")))
        cfg = tiny_pipeline_config("obs-lora", evaluation={"max_problems": 2, "shard_size": 2})
        event = TrainRequested(request_id="obs-run", adapter_name="obs-lora", config=cfg, config_sha256="obs")
        from opentelemetry import trace

        with trace.use_span(provider.get_tracer("test").start_span("train.requested"), end_on_exit=True) as root:
            await publish_event(js, event)
        trace_id = format(root.get_span_context().trace_id, "032x")
        await asyncio.to_thread(provider.force_flush)
        await events.wait("adapter.evaluated", timeout=360, fleet=fleet)
        deadline = time.monotonic() + 30  # the registry's answer: registered, or rejected by the gate
        while not (events.of("adapter.registered") or events.of("adapter.rejected")) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            for service, port in ports.items():
                assert (await get(http, port, "/health"))[0] == 200, service
                status, body = await get(http, port, "/ready")
                assert status == 200, f"{service} not ready: {body}"
            # Counters equal the events of the run in the stream (let the last acks land first).
            await asyncio.sleep(1.0)
            for service, port in ports.items():
                counts = handled((await get(http, port, "/metrics"))[1])
                assert counts, f"{service} counted nothing"
                for event_type, value in counts.items():
                    in_stream = [e for e in await unique_in_stream(js, event_type) if e.get("request_id") == "obs-run"]
                    assert value == len(in_stream), f"{service}: {event_type} counted {value}, stream has {len(in_stream)}"
        # Spans arrive in batches; every service's handler span carries the run's trace id.
        wanted = {f"lorafleet-{s}" for s in ("ingest", "enrich", "trainer", "evaluator", "registry")}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            seen = {s["service"] for s in receiver.spans if s["trace_id"] == trace_id}
            if wanted <= seen:
                break
            await asyncio.sleep(0.2)
        ours = [s for s in receiver.spans if s["trace_id"] == trace_id]
        assert wanted <= {s["service"] for s in ours}, sorted({(s["service"], s["name"]) for s in ours})
        names = {s["name"] for s in ours}
        assert {"trainer.train", "model.generate", "sandbox.judge"} <= names  # the model and sandbox calls as child spans
    finally:
        fleet.stop()
        if nc is not None:
            await nc.close()
        await receiver.stop()
