"""Fixtures every test area shares. Real nats-server only: no in-memory broker."""

from __future__ import annotations

import asyncio
import json

import pytest

from lorafleet.shared.nats_server import NatsServer


@pytest.fixture
def nats_server(tmp_path):
    """A fresh JetStream nats-server on a free loopback port; stopped (by pid group) after the test."""
    server = NatsServer(store_dir=tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_url(nats_server) -> str:
    return nats_server.url


@pytest.fixture(autouse=True)
def _restore_environ():
    """Code under test (the CLI's --nats-url, the demo's settings) may set os.environ in-process;
    no test may leak that into the next one (or into the subprocesses later tests start)."""
    import os

    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
async def js(settings):
    """A JetStream context on the test's server with the project's stream in place.

    `settings` comes from the test area (each sets its own ack wait, max deliver, ...)."""
    from lorafleet.shared.bus import connect, ensure_stream

    nc = await connect(settings)
    js = nc.jetstream()
    await ensure_stream(js, settings)
    try:
        yield js
    finally:
        await nc.close()


class EventRecorder:
    """Every event on the stream's subjects, as seen by a core NATS subscriber."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict]] = []

    async def start(self, nc) -> "EventRecorder":
        async def on_msg(msg):
            self.items.append((msg.subject.removeprefix("lorafleet.v1."), json.loads(msg.data)))

        await nc.subscribe("lorafleet.v1.>", cb=on_msg)
        return self

    def of(self, event_type: str) -> list[dict]:
        return [data for t, data in self.items if t == event_type]

    async def wait(self, event_type: str, n: int = 1, timeout: float = 20.0) -> list[dict]:
        for _ in range(int(timeout / 0.05)):
            if len(self.of(event_type)) >= n:
                return self.of(event_type)
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {n} x {event_type} within {timeout}s; saw {[t for t, _ in self.items]}")


@pytest.fixture
def record_events():
    """`events = await record_events(nc)`: start recording every event published from now on."""
    return lambda nc: EventRecorder().start(nc)


@pytest.fixture
def span_exporter():
    """An in-memory span exporter behind the process's tracer provider (which can be set only once)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        trace.set_tracer_provider(provider)
    exporter = provider._active_span_processor._span_processors[0].span_exporter
    exporter.clear()
    return exporter
