"""The demo's load generator against a real OpenAI-compatible server (`lorafleet model serve`
with the random-init tiny model): requests go out with the openai client and come back;
a server that dies makes the generator raise BackendDown instead of sending into the void."""

from __future__ import annotations

import asyncio

import pytest

from lorafleet.demo.fleet import ModelServer
from lorafleet.demo.load import BackendDown, LoadGenerator
from lorafleet.demo.production import split_production

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def server(tmp_path):
    from lorafleet.services.trainer.tiny_model import resolve_base_model

    srv = ModelServer(resolve_base_model("tiny://random"), tmp_path / "server.log", "tiny")
    srv.start(timeout=180)
    yield srv
    srv.stop()


async def test_requests_are_sent_and_answered_then_a_dead_backend_stops_the_load(server):
    problems = split_production().traffic[:5]
    gen = LoadGenerator(server.url, "tiny", problems, users=3, concurrency=2, max_tokens=8, down_after=3)
    stats = await gen.run(asyncio.Event(), max_requests=6)
    assert stats.sent == 6 and stats.answered == 6 and stats.errors == 0
    assert stats.by_arm == {"unrouted": 6}  # a plain server sets no x-lorafleet-* headers: the gateway does
    assert len(stats.latency_ms) == 6 and min(stats.latency_ms) > 0

    server.stop()
    dead = LoadGenerator(server.url, "tiny", problems, concurrency=1, down_after=3, timeout_s=5)
    with pytest.raises(BackendDown, match="3 requests in a row"):
        await dead.run(asyncio.Event(), max_requests=50)
    assert dead.stats.answered == 0 and dead.stats.errors == 3
