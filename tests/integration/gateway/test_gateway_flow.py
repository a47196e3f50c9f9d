"""The gateway end to end: real nats-server, the registry service, `lorafleet model serve` with the
tiny model, two registered versions under an A/B test, the openai client.

Split within tolerance, sticky route keys, headers, outcomes judged in the sandbox counted by the
registry exactly once, feedback into the collector's pool, streaming, completions, models.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from gateway_kit import MSG, health, register_versions, wait_route
from openai import AsyncOpenAI

from lorafleet.services.gateway.app import start_gateway
from lorafleet.services.gateway.settings import GatewaySettings
from lorafleet.services.registry.collector import Collector
from lorafleet.services.registry.settings import RegistrySettings
from lorafleet.services.registry.store import RegistryStore
from lorafleet.shared.bus import connect
from lorafleet.shared.events import STREAM

NAME = "py-ab"
TESTS = [{"kind": "stdio", "input": "1\n", "output": "4\n"}, {"kind": "stdio", "input": "5\n", "output": "8\n"}]
OUTCOMES = "lorafleet.v1.production.outcome"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


async def stream_outcomes(js) -> list[dict]:
    info = await js.stream_info(STREAM, subjects_filter=OUTCOMES)
    n = sum((info.state.subjects or {}).values())
    if not n:
        return []
    sub = await js.subscribe(OUTCOMES, ordered_consumer=True, stream=STREAM)
    try:
        return [json.loads((await sub.next_msg(timeout=10)).data) for _ in range(n)]
    finally:
        await sub.unsubscribe()


async def wait_outcomes(js, n: int, timeout: float = 120.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await stream_outcomes(js)
        if len(got) >= n:
            return got
        await asyncio.sleep(0.2)
    raise AssertionError(f"expected {n} outcomes within {timeout}s, have {len(await stream_outcomes(js))}")


async def wait_counted(store: RegistryStore, n: int, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state, _ = await store.get(NAME)
        counted = state.base_metrics.requests + sum(v.metrics.requests for v in state.versions.values())
        if counted >= n:
            return state
        await asyncio.sleep(0.1)
    raise AssertionError(f"the registry counted {counted} outcomes, expected {n}")


async def test_ab_routing_outcomes_and_feedback(settings, registry, backend_url, tiny):
    await register_versions(settings, NAME, tiny)
    gw = await start_gateway(settings, GatewaySettings(port=0, backends=[backend_url], judge_workers=2, reconcile_s=1))
    nc = await connect(settings)
    client = AsyncOpenAI(base_url=gw.url, api_key="none", max_retries=0, timeout=120)
    try:
        js = nc.jetstream()
        await wait_route(gw.gateway, NAME, candidate=2)

        # ---- the split: 160 users, judged answers (tests attached), small generations
        sem = asyncio.Semaphore(8)

        async def ask(user: str, tests=TESTS, max_tokens: int = 2, **extra):
            async with sem:
                raw = await client.chat.completions.with_raw_response.create(
                    model=NAME, messages=MSG, user=user, max_tokens=max_tokens, temperature=0,
                    extra_body={"lorafleet": {"tests": tests}} if tests else None, **extra)
                return raw.headers, raw.parse()

        users = [f"user-{i}" for i in range(160)]
        answers = await asyncio.gather(*(ask(u) for u in users))
        versions = {u: int(h["x-lorafleet-version"]) for u, (h, _) in zip(users, answers)}
        share = sum(v == 2 for v in versions.values()) / len(users)
        assert abs(share - 0.3) <= 0.12, f"candidate share {share:.2f}, configured 0.3"
        for h, completion in answers:
            assert h["x-lorafleet-adapter"] == NAME
            assert h["x-lorafleet-arm"] == {1: "active", 2: "candidate"}[int(h["x-lorafleet-version"])]
            assert completion.model == NAME and completion.choices[0].finish_reason in ("stop", "length")
        ids = {h["x-request-id"] for h, _ in answers}
        assert len(ids) == len(users)

        # ---- sticky: the same key always lands on the same version (body `user` or the header)
        again = await asyncio.gather(*(ask(u, tests=None) for u in users[:12]))
        assert [int(h["x-lorafleet-version"]) for h, _ in again] == [versions[u] for u in users[:12]]
        async with aiohttp.ClientSession() as s:
            for u in users[:6]:
                async with s.post(gw.url + "/chat/completions", headers={"x-lorafleet-route-key": u},
                                  json={"model": NAME, "messages": MSG, "max_tokens": 2}) as r:
                    assert r.status == 200 and int(r.headers["x-lorafleet-version"]) == versions[u]

        # ---- judged outcomes: one per request, the request id as event id, counted once by the registry
        outcomes = await wait_outcomes(js, len(users))
        assert len(outcomes) == len(users) and {o["event_id"] for o in outcomes} == ids
        by_id = {o["request_id"]: o for o in outcomes}
        for h, _ in answers:
            o = by_id[h["x-request-id"]]
            assert o["adapter_name"] == NAME and o["version"] == int(h["x-lorafleet-version"])
            assert o["tests"] == TESTS and o["problem"] == MSG[0]["content"] and o["latency_ms"] > 0
            # a random-init model does not solve the problem: every judged answer fails, with certainty
            assert o["success"] is False and o["confidence"] == 1.0
        store = await RegistryStore.open(js, RegistrySettings())
        state = await wait_counted(store, len(users))
        for v in (1, 2):
            assert state.versions[v].metrics.requests == sum(x == v for x in versions.values())
        assert state.versions[2].metrics.successes == 0

        # ---- feedback: no tests; the client reports; once only
        fb = []
        for i in range(4):
            raw = await client.chat.completions.with_raw_response.create(
                model=NAME, messages=[{"role": "user", "content": f"Problem {i}: print {i}."}], user=f"fb-{i}",
                max_tokens=12, temperature=1.0, seed=i)
            fb.append(raw.headers["x-request-id"])
        async with aiohttp.ClientSession() as s:
            async def feedback(body):
                async with s.post(gw.url + "/feedback", json=body) as r:
                    return r.status, await r.json()

            for rid in fb:
                assert (await feedback({"request_id": rid, "success": True, "confidence": 0.95}))[0] == 202
            status, body = await feedback({"request_id": fb[0], "success": False})
            assert status == 409 and "once" in body["error"]["message"]
            assert (await feedback({"request_id": next(iter(ids)), "success": True}))[0] == 409  # judged already
            status, body = await feedback({"request_id": "no-such-request", "success": True})
            assert status == 404 and body["error"]["param"] == "request_id"
            assert (await feedback({"request_id": fb[1], "success": "yes"}))[0] == 400
        outcomes = await wait_outcomes(js, len(users) + 4)
        await asyncio.sleep(1.0)  # a duplicate would show up by now
        outcomes = await stream_outcomes(js)
        assert len(outcomes) == len(users) + 4 and len({o["event_id"] for o in outcomes}) == len(outcomes)
        fed = [o for o in outcomes if o["request_id"] in fb]
        assert all(o["success"] and o["confidence"] == 0.95 and o["tests"] is None for o in fed)
        await wait_counted(store, len(users) + 4)
        # the collector got them once: successful, confident, with a solution -> one pool entry each
        collector = await Collector.open(store, None, verify=None)
        with_code = sum(bool(o["solution"] and o["solution"].strip()) for o in fed)
        for _ in range(300):
            if await collector.pool_size(NAME) >= with_code:
                break
            await asyncio.sleep(0.1)
        assert await collector.pool_size(NAME) == with_code >= 1
        consumer = await js.consumer_info(STREAM, "registry")
        assert consumer.num_pending == 0 and consumer.num_redelivered == 0

        # ---- streaming gives the same greedy text as the plain answer, through the openai client
        user = users[0]
        plain = (await ask(user, tests=None, max_tokens=8))[1].choices[0].message.content
        stream = await client.chat.completions.create(model=NAME, messages=MSG, user=user, max_tokens=8,
                                                      temperature=0, stream=True)
        pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        assert "".join(pieces) == plain

        # ---- completions, models, base-model passthrough
        raw = await client.completions.with_raw_response.create(model=NAME, prompt="n = int(input())", max_tokens=3,
                                                                user=user, temperature=0)
        assert int(raw.headers["x-lorafleet-version"]) == versions[user] and raw.parse().choices[0].text is not None
        models = {m.id for m in (await client.models.list()).data}
        assert {NAME, "tiny"} <= models
        raw = await client.chat.completions.with_raw_response.create(model="tiny", messages=MSG, max_tokens=2)
        assert "x-lorafleet-version" not in raw.headers and raw.headers["x-request-id"]
        report = await health(gw.url)
        assert report["status"] == "ok" and report["spool"] == 0 and report["judged"] == len(users)
        assert gw.gateway.backends.loads == 2  # each version loaded once on the one backend
    finally:
        await client.close()
        await gw.stop()
        await nc.close()
