"""Exactly once through a NATS outage: nats-server restarts while 200 requests with tests are served;
every request is answered, and afterwards the stream holds exactly 200 outcomes, none twice,
each counted once by the registry."""

from __future__ import annotations

import asyncio
import time

import pytest
from gateway_kit import MSG, health, register_versions, wait_route
from openai import AsyncOpenAI
from test_gateway_flow import stream_outcomes

from lorafleet.services.gateway.app import start_gateway
from lorafleet.services.gateway.settings import GatewaySettings
from lorafleet.services.registry import core as registry_core
from lorafleet.services.registry.settings import RegistrySettings
from lorafleet.services.registry.store import RegistryStore, now
from lorafleet.shared.bus import connect

NAME = "py-restart"
REQUESTS = 200
TESTS = [{"kind": "stdio", "input": "2\n", "output": "5\n"}]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


async def test_nats_restart_loses_and_duplicates_nothing(settings, registry, backend_url, tiny, nats_server):
    await register_versions(settings, NAME, tiny)
    gw = await start_gateway(settings, GatewaySettings(port=0, backends=[backend_url], judge_workers=2, reconcile_s=1,
                                                       publish_timeout_s=1.0))
    client = AsyncOpenAI(base_url=gw.url, api_key="none", max_retries=0, timeout=120)
    try:
        await wait_route(gw.gateway, NAME, candidate=2)
        served: list[str] = []
        sem = asyncio.Semaphore(8)

        async def ask(i: int) -> None:
            async with sem:
                raw = await client.chat.completions.with_raw_response.create(
                    model=NAME, messages=MSG, user=f"u{i}", max_tokens=2, temperature=0,
                    extra_body={"lorafleet": {"tests": TESTS}})
                served.append(raw.headers["x-request-id"])

        async def restart() -> None:
            while len(served) < REQUESTS // 4:
                await asyncio.sleep(0.05)
            nats_server.stop()
            await asyncio.sleep(3.0)  # requests keep coming while the server is gone
            nats_server.start()

        await asyncio.gather(restart(), *(ask(i) for i in range(REQUESTS)))
        assert len(set(served)) == REQUESTS  # the gateway kept serving through the outage

        report = await health(gw.url)
        assert report["spooled"] > 0, "the outage must have sent outcomes to the spool (else this test proves nothing)"
        deadline = time.monotonic() + 120
        while (await health(gw.url))["spool"] and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert (await health(gw.url))["spool"] == 0

        nc = await connect(settings)
        try:
            js = nc.jetstream()
            while time.monotonic() < deadline and len(await stream_outcomes(js)) < REQUESTS:
                await asyncio.sleep(0.2)
            await asyncio.sleep(2.0)  # a late duplicate would land now
            outcomes = await stream_outcomes(js)
            ids = [o["event_id"] for o in outcomes]
            assert len(ids) == REQUESTS and set(ids) == set(served)
            store = await RegistryStore.open(js, RegistrySettings())
            while time.monotonic() < deadline:
                state, _ = await store.get(NAME)
                counted = sum(v.metrics.requests for v in state.versions.values())
                if counted >= REQUESTS:
                    break
                await asyncio.sleep(0.2)
            assert counted == REQUESTS
            # the gateway's route table still follows the registry after the restart
            await store.apply(NAME, lambda s: registry_core.stop_ab(s, NAME, now()))
            while gw.gateway.router.tables[NAME].candidate is not None and time.monotonic() < deadline + 30:
                await asyncio.sleep(0.1)
            assert gw.gateway.router.tables[NAME].candidate is None, "the KV watch did not survive the restart"
        finally:
            await nc.close()
    finally:
        await client.close()
        await gw.stop()
