"""Bad input, API keys, no backend, hostile programs, judged successes into the collector's pool.

The backend here is a real local HTTP server that answers with the user's message (an "echo
model"), so a test decides which program the gateway judges: correct, crashing, looping, hostile.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp import web
from test_gateway_flow import stream_outcomes, wait_outcomes

from lorafleet.services.gateway.app import start_gateway
from lorafleet.services.gateway.settings import GatewaySettings
from lorafleet.services.registry import core as registry_core
from lorafleet.services.registry.collector import Collector
from lorafleet.services.registry.model import AdapterInfo
from lorafleet.services.registry.settings import RegistrySettings
from lorafleet.services.registry.store import RegistryStore, now
from lorafleet.shared.artifacts import open_store
from lorafleet.shared.bus import connect, ensure_stream
from lorafleet.shared.events import AdapterEvaluated, GateCriterion
from lorafleet.shared.nats_server import free_port

NAME = "echo-lora"
TESTS = [{"kind": "stdio", "input": f"{i}\n", "output": f"{i + 3}\n"} for i in range(4)]


class EchoBackend:
    """OpenAI-compatible: the answer is the last user message; records adapter loads."""

    def __init__(self) -> None:
        self.loads: list[dict] = []
        self.unloads: list[dict] = []
        self.served = 0

    async def start(self, port: int = 0) -> "EchoBackend":
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/load_lora_adapter", self.load)
        app.router.add_post("/v1/unload_lora_adapter", self.unload)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"
        return self

    async def chat(self, request):
        self.served += 1
        body = await request.json()
        text = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
        return web.json_response({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                  "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                               "finish_reason": "stop"}]})

    async def models(self, request):  # like vLLM: the base model and every LoRA loaded at run time
        loaded = {b["lora_name"] for b in self.loads} - {b["lora_name"] for b in self.unloads}
        return web.json_response({"data": [{"id": "echo-base", "parent": None},
                                           *({"id": name, "parent": "echo-base"} for name in sorted(loaded))]})

    async def load(self, request):
        self.loads.append(await request.json())
        return web.Response(text="ok")

    async def unload(self, request):
        self.unloads.append(await request.json())
        return web.Response(text="ok")


async def registered(settings, tmp_path) -> RegistryStore:
    nc = await connect(settings)
    js = nc.jetstream()
    await ensure_stream(js, settings)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 8, "target_modules": ["q_proj"]}')
    ref = await open_store(settings, js=js).put_dir(adapter, f"adapters/{NAME}/v1")
    rs = RegistrySettings(ab_auto_start=False)
    store = await RegistryStore.open(js, rs)
    ev = AdapterEvaluated(request_id="r", adapter_name=NAME, version=1, adapter=ref, base_model="echo-base", rank=8,
                          target_modules=["q_proj"], gate_passed=True,
                          gate=[GateCriterion(name="g", measured=1, threshold=0, comparison=">=", passed=True)])
    await store.apply(NAME, lambda s: registry_core.register(s, ev, AdapterInfo(rank=8, target_modules=["q_proj"]), 1,
                                                               now(), rs))
    await store.apply(NAME, lambda s: registry_core.promote(s, NAME, 1, now()))
    store.nc = nc
    return store


async def post(url: str, body, headers=None):
    async with aiohttp.ClientSession() as s:
        kwargs = {"data": body} if isinstance(body, (bytes, str)) else {"json": body}
        async with s.post(url, headers=headers or {}, **kwargs) as r:
            return r.status, r.headers.copy(), await r.json(content_type=None)


@pytest.fixture
async def echo():
    backend = await EchoBackend().start()
    yield backend
    await backend.runner.cleanup()


async def test_bad_input_gets_its_error_and_nothing_reaches_the_bus(settings, tmp_path, echo):
    store = await registered(settings, tmp_path)
    gw = await start_gateway(settings, GatewaySettings(port=0, backends=[echo.url]))
    try:
        chat = gw.url + "/chat/completions"
        status, _, body = await post(chat, b"{oops")
        assert status == 400 and "not valid JSON" in body["error"]["message"]
        status, _, body = await post(chat, {"model": NAME})
        assert status == 400 and body["error"]["param"] == "messages"
        status, _, body = await post(chat, {"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]})
        assert status == 404 and NAME in body["error"]["message"] and "echo-base" in body["error"]["message"]
        status, _, body = await post(chat, {"model": NAME, "messages": [{"role": "user", "content": "x"}],
                                            "lorafleet": {"tests": [TESTS[0], {"kind": "stdio", "input": "1"}]}})
        assert status == 400 and body["error"]["param"] == "lorafleet.tests[1]" and "output" in body["error"]["message"]
        status, _, body = await post(chat, {"model": NAME, "messages": [{"role": "user", "content": "x"}], "n": 0})
        assert status == 400 and body["error"]["param"] == "n"
        await asyncio.sleep(1.0)
        assert await stream_outcomes(store.js) == [] and echo.loads == []  # nothing of it went anywhere
    finally:
        await gw.stop()
        await store.nc.close()


async def test_no_backend_is_503_with_retry_after_and_api_keys(settings, tmp_path):
    store = await registered(settings, tmp_path)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    gw = await start_gateway(settings, GatewaySettings(port=0, backends=[dead], api_keys=["k1", "k2"]))
    try:
        msg = {"model": NAME, "messages": [{"role": "user", "content": "x"}]}
        status, _, body = await post(gw.url + "/chat/completions", msg)
        assert status == 401 and "Bearer" in body["error"]["message"]
        status, _, _ = await post(gw.url + "/chat/completions", msg, {"Authorization": "Bearer wrong"})
        assert status == 401
        status, headers, body = await post(gw.url + "/chat/completions", msg, {"Authorization": "Bearer k2"})
        assert status == 503 and int(headers["Retry-After"]) >= 1 and dead in body["error"]["message"]
        # A routed request that serving failed is an error outcome (the A/B test's error guardrail), never
        # a pool candidate; the 401s before it were the client's and left no outcome.
        [outcome] = await wait_outcomes(store.js, 1)
        assert outcome["error"] is True and outcome["success"] is False and outcome["confidence"] == 0.0
        assert outcome["adapter_name"] == NAME and outcome["version"] == 1 and outcome["solution"] is None
        async with aiohttp.ClientSession() as s:
            async with s.get(gw.url.removesuffix("/v1") + "/health") as r:  # probes need no key
                assert r.status == 200 and (await r.json())["backends"][0]["up"] is False
    finally:
        await gw.stop()
    gw = await start_gateway(settings, GatewaySettings(port=0, backends=[]))
    try:
        status, headers, body = await post(gw.url + "/chat/completions", msg)
        assert status == 503 and "LORAFLEET_GATEWAY_BACKENDS" in body["error"]["message"] and headers["Retry-After"]
        assert [o["error"] for o in await wait_outcomes(store.js, 2)] == [True, True]
    finally:
        await gw.stop()
        await store.nc.close()


HOSTILE = {
    "crash": "raise SystemExit(3)",
    "loop": "while True:\n    pass",
    "fork": "import os\nwhile True:\n    os.fork()",
    "attack": "import os, signal\nos.kill(1, signal.SIGKILL)\nprint(open('/etc/shadow').read())",
    "memory": "x = ' ' * (1 << 34)",
}


async def test_judged_outcomes_hostile_programs_fail_and_a_correct_one_reaches_the_pool(
        settings, tmp_path, echo, registry_env, monkeypatch):
    from lorafleet.services.registry.app import service

    monkeypatch.setenv("LORAFLEET_REGISTRY_RETRAIN_POOL_THRESHOLD", "1000")
    async with service.running(settings):
        store = await registered(settings, tmp_path)
        gw = await start_gateway(settings, GatewaySettings(port=0, backends=[echo.url], judge_workers=2, reconcile_s=0.5))
        try:
            ids = {}
            for label, program in {**HOSTILE, "correct": "n = int(input())\nprint(n + 3)"}.items():
                content = f"Solve it.\n```python\n{program}\n```"
                status, headers, _ = await post(gw.url + "/chat/completions", {
                    "model": NAME, "messages": [{"role": "user", "content": content}], "user": label,
                    "lorafleet": {"tests": TESTS, "limits": {"time_s": 1, "memory_mb": 256}}})
                assert status == 200, label  # the answer is served before anything is judged
                ids[headers["x-request-id"]] = label
            deadline = time.monotonic() + 120
            while len(outcomes := await stream_outcomes(store.js)) < len(ids) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            by_label = {ids[o["request_id"]]: o for o in outcomes}
            assert set(by_label) == set(ids.values())
            for label in HOSTILE:
                assert by_label[label]["success"] is False and by_label[label]["confidence"] == 1.0, label
            good = by_label["correct"]
            assert good["success"] and good["confidence"] == 0.9375 and good["solution"].startswith("n = int(input())")
            assert echo.loads == [{"lora_name": f"{NAME}:v1", "lora_path": echo.loads[0]["lora_path"]}]
            # the collector re-verifies it in the sandbox and keeps it: one pool entry
            collector = await Collector.open(store, None, verify=None)
            while await collector.pool_size(NAME) < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert await collector.pool_size(NAME) == 1
            # a version that is no longer routed (v1 retired by promoting v2) is unloaded from the backend
            state, _ = await store.get(NAME)
            v1 = state.versions[1]
            ev = AdapterEvaluated(request_id="r2", adapter_name=NAME, version=2, adapter=v1.artifact,
                                  base_model="echo-base", rank=8, target_modules=["q_proj"], gate_passed=True,
                                  gate=[GateCriterion(name="g", measured=1, threshold=0, comparison=">=", passed=True)])
            rs = RegistrySettings(ab_auto_start=False)
            await store.apply(NAME, lambda s: registry_core.register(
                s, ev, AdapterInfo(rank=8, target_modules=["q_proj"]), 2, now(), rs))
            await store.apply(NAME, lambda s: registry_core.promote(s, NAME, 2, now()))
            while not echo.unloads and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert echo.unloads == [{"lora_name": f"{NAME}:v1"}]
        finally:
            await gw.stop()
            await store.nc.close()


async def test_feedback_reaches_the_replica_that_served_the_request(settings, tmp_path, echo):
    store = await registered(settings, tmp_path)
    a = await start_gateway(settings, GatewaySettings(port=0, backends=[echo.url]))
    b = await start_gateway(settings, GatewaySettings(port=0, backends=[echo.url], spool_dir=tmp_path / "spool-b"))
    try:
        status, headers, _ = await post(a.url + "/chat/completions", {
            "model": NAME, "messages": [{"role": "user", "content": "```python\nprint(7)\n```"}]})
        rid = headers["x-request-id"]
        assert status == 200
        status, _, body = await post(b.url + "/feedback", {"request_id": rid, "success": True, "confidence": 0.97})
        assert status == 202 and body["status"] == "accepted"  # forwarded to replica a over NATS
        status, _, body = await post(b.url + "/feedback", {"request_id": rid, "success": False})
        assert status == 409
        status, _, _ = await post(b.url + "/feedback", {"request_id": "nobody-served-this", "success": True})
        assert status == 404
        deadline = time.monotonic() + 30
        while not (outcomes := await stream_outcomes(store.js)) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        outcomes = await stream_outcomes(store.js)
        assert [(o["request_id"], o["success"], o["confidence"], o["solution"]) for o in outcomes] == [
            (rid, True, 0.97, "print(7)")]
    finally:
        await a.stop()
        await b.stop()
        await store.nc.close()



async def get_json(url: str) -> dict:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return await r.json()


async def test_least_in_flight_and_a_dead_backend_is_skipped_then_used_again(settings, tmp_path):
    store = await registered(settings, tmp_path)
    one, two = await EchoBackend().start(), await EchoBackend().start()
    gw = await start_gateway(settings, GatewaySettings(port=0, backends=[one.url, two.url], backend_retry_s=1,
                                                       reconcile_s=0.3))
    msg = {"model": NAME, "messages": [{"role": "user", "content": "print(1)"}]}
    health = gw.url.removesuffix("/v1") + "/health"
    try:
        for _ in range(10):
            assert (await post(gw.url + "/chat/completions", msg))[0] == 200
        assert one.served == two.served == 5  # idle backends: ties alternate
        port = int(two.url.rsplit(":", 1)[1].split("/")[0])
        await two.runner.cleanup()  # backend two goes away
        for _ in range(6):
            assert (await post(gw.url + "/chat/completions", msg))[0] == 200  # all answered, by backend one
        assert one.served == 11 and (await get_json(health))["backends"][1]["up"] is False
        two = await EchoBackend().start(port)  # back, as a fresh process without the adapter
        deadline = time.monotonic() + 30
        while not all(b["up"] for b in (await get_json(health))["backends"]) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        for _ in range(4):
            assert (await post(gw.url + "/chat/completions", msg))[0] == 200
        assert two.served >= 1 and [b["lora_name"] for b in two.loads] == [f"{NAME}:v1"]  # loaded again
    finally:
        await gw.stop()
        await one.runner.cleanup()
        await two.runner.cleanup()
        await store.nc.close()


class StatusBackend(EchoBackend):
    """The echo model, answering chat requests with `status` (and an error body) when it is not 200."""

    status = 200

    async def chat(self, request):
        if self.status == 200:
            return await super().chat(request)
        self.served += 1
        return web.json_response({"error": {"message": f"backend says {self.status}"}}, status=self.status)


async def test_a_backend_5xx_is_an_error_outcome_and_a_4xx_is_none(settings, tmp_path):
    store = await registered(settings, tmp_path)
    backend = await StatusBackend().start()
    gw = await start_gateway(settings, GatewaySettings(port=0, backends=[backend.url]))
    msg = {"model": NAME, "messages": [{"role": "user", "content": "print(1)"}], "user": "u1"}
    try:
        backend.status = 400  # the request's fault: passed through, no outcome
        status, _, body = await post(gw.url + "/chat/completions", msg)
        assert status == 400 and "400" in body["error"]["message"]
        backend.status = 500
        status, headers, _ = await post(gw.url + "/chat/completions", msg)
        assert status == 500 and headers["x-lorafleet-version"] == "1"
        [error] = await wait_outcomes(store.js, 1)
        assert error["error"] is True and error["success"] is False and error["confidence"] == 0.0
        assert error["request_key"] == "u1" and error["version"] == 1
        backend.status = 200  # answered, no tests attached: it waits for feedback, no outcome yet
        assert (await post(gw.url + "/chat/completions", msg))[0] == 200
        await asyncio.sleep(1.0)
        assert len(await stream_outcomes(store.js)) == 1  # the 400 and the answered request left none
    finally:
        await gw.stop()
        await backend.runner.cleanup()
        await store.nc.close()
