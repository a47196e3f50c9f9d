"""Gateway benchmark: what the gateway adds to a request, and how fast it judges outcomes.

In one run, on an embedded nats-server started here:
- a fast fake OpenAI backend (its own process; answers at once, streams 8 chunks);
- one gateway process (`lorafleet serve gateway`) in front of it, routing a registered adapter;
- the same load sent to the backend directly and through the gateway, at concurrency 1 and 64,
  streaming and not: requests/s and latency p50/p99 of each, and the difference (added latency)
  and the ratio (throughput through the gateway / direct);
- judged outcomes/s: requests with tests (the fake backend answers a correct program), counted
  until every outcome is in the stream, against the sandbox's own rate judging the same programs
  with the same number of workers in this process.

Anchor (issue 17): LiteLLM documents ~3 ms added latency, median overhead 2-12 ms. Goal: added
p50 <= 1 ms, p99 <= 5 ms, throughput >= 90% of direct at concurrency 64.

    .venv/bin/python benchmarks/gateway.py [--requests 2000] [--judged 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil
from aiohttp import web

NAME = "bench-lora"
PROGRAM = "n = int(input())\nprint(n + 3)\n"
ANSWER = f"Here is the program:\n```python\n{PROGRAM}```"
TESTS = [{"kind": "stdio", "input": f"{i}\n", "output": f"{i + 3}\n"} for i in range(4)]
MSG = [{"role": "user", "content": "Read n and print n + 3."}]


# --------------------------------------------------------------------------- the fake backend


def fake_backend(port: int) -> None:
    """An OpenAI-compatible server that answers at once (its own process)."""
    head = {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0}

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.json_response({**head, "model": body["model"], "choices": [
                {"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        words = ANSWER.split(" ")
        step = max(1, len(words) // 8)
        for i in range(0, len(words), step):
            piece = " ".join(words[i:i + step]) + (" " if i + step < len(words) else "")
            chunk = {**head, "object": "chat.completion.chunk", "model": body["model"],
                     "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-base", "object": "model", "parent": None}]})

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="Success")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/load_lora_adapter", ok)
    app.router.add_post("/v1/unload_lora_adapter", ok)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# --------------------------------------------------------------------------- load


def cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def load(url: str, n: int, concurrency: int, stream: bool, user_prefix: str, tests=None) -> dict:
    """n requests at `concurrency`; latency = request sent to the last byte read."""
    latencies: list[float] = []
    body = {"model": NAME, "messages": MSG, "max_tokens": 32, "stream": stream}
    if tests:
        body["lorafleet"] = {"tests": tests}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        counter = iter(range(n))

        async def worker() -> None:
            for i in counter:
                t0 = time.perf_counter()
                async with session.post(url + "/chat/completions", json={**body, "user": f"{user_prefix}{i}"}) as r:
                    await r.read()
                    assert r.status == 200, r.status
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"rps": n / wall, "p50_ms": pct(latencies, 0.5) * 1000, "p99_ms": pct(latencies, 0.99) * 1000}


# --------------------------------------------------------------------------- setup


async def wait_up(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url + "/models") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.1)


async def register(settings, tmp: Path) -> None:
    from lorafleet.services.registry import core
    from lorafleet.services.registry.model import AdapterInfo
    from lorafleet.services.registry.settings import RegistrySettings
    from lorafleet.services.registry.store import RegistryStore, now
    from lorafleet.shared.artifacts import open_store
    from lorafleet.shared.bus import connect, ensure_stream
    from lorafleet.shared.events import AdapterEvaluated, GateCriterion

    adapter = tmp / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8, "target_modules": ["q_proj"], "peft_type": "LORA"}))
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    nc = await connect(settings)
    try:
        js = nc.jetstream()
        await ensure_stream(js, settings)
        ref = await open_store(settings, js=js).put_dir(adapter, f"adapters/{NAME}/v1")
        rs = RegistrySettings(ab_auto_start=False)
        store = await RegistryStore.open(js, rs)
        ev = AdapterEvaluated(request_id="bench", adapter_name=NAME, version=1, adapter=ref, base_model="fake-base",
                              rank=8, target_modules=["q_proj"], gate_passed=True,
                              gate=[GateCriterion(name="x", measured=1, threshold=0, comparison=">=", passed=True)])
        info = AdapterInfo(rank=8, target_modules=["q_proj"])
        await store.apply(NAME, lambda s: core.register(s, ev, info, 1, now(), rs))
        await store.apply(NAME, lambda s: core.promote(s, NAME, 1, now()))
    finally:
        await nc.close()


async def count_outcomes(settings) -> int:
    from lorafleet.shared.bus import connect
    from lorafleet.shared.events import STREAM

    nc = await connect(settings)
    try:
        info = await nc.jetstream().stream_info(STREAM, subjects_filter="lorafleet.v1.production.outcome")
        return sum((info.state.subjects or {}).values())
    finally:
        await nc.close()


def sandbox_rate(n: int, workers: int) -> float:
    from lorafleet.shared.problems import TestCase
    from lorafleet.shared.sandbox import default_sandbox

    sandbox = default_sandbox()
    tests = [TestCase.model_validate(t) for t in TESTS]
    sandbox.judge_many([(PROGRAM, tests)] * 4, workers=workers)  # warm
    t0 = time.perf_counter()
    sandbox.judge_many([(PROGRAM, tests)] * n, workers=workers, fail_fast=False)
    return n / (time.perf_counter() - t0)


async def main(args) -> None:
    from lorafleet.services.gateway.app import spawn_gateway
    from lorafleet.shared.nats_server import NatsServer, free_port
    from lorafleet.shared.settings import Settings

    with tempfile.TemporaryDirectory(prefix="lorafleet-gwbench-") as tmp_name:
        tmp = Path(tmp_name)
        server = NatsServer(store_dir=tmp / "nats").start()
        procs: list[subprocess.Popen] = []
        try:
            settings = Settings(nats_url=server.url, data_dir=tmp / "data")
            port = free_port()
            procs.append(subprocess.Popen([sys.executable, __file__, "--fake-backend", str(port)], start_new_session=True))
            direct = f"http://127.0.0.1:{port}/v1"
            await wait_up(direct)
            await register(settings, tmp)
            gw, url = spawn_gateway({"LORAFLEET_NATS_URL": server.url, "LORAFLEET_DATA_DIR": str(tmp / "data"),
                                     "LORAFLEET_GATEWAY_PORT": "0", "LORAFLEET_GATEWAY_BACKENDS": direct,
                                     "LORAFLEET_GATEWAY_JUDGE_WORKERS": str(args.workers),
                                     "LORAFLEET_LOG_LEVEL": "WARNING"})
            procs.append(gw)
            await load(url, 50, 4, False, "warm")  # adapter loaded, connections open
            await load(direct, 50, 4, False, "warm")
            print(f"gateway benchmark: {args.requests} requests per cell, fake backend in its own process, "
                  f"{os.cpu_count()} CPUs (shared)")
            print(f"{'mode':<10}{'conc':>5} | {'direct rps':>10} {'p50':>7} {'p99':>7} | {'gateway rps':>11} {'p50':>7} "
                  f"{'p99':>7} | {'added p50':>9} {'added p99':>9} {'ratio':>6}")
            backend_proc, gateway_proc = psutil.Process(procs[0].pid), psutil.Process(gw.pid)
            cpu_notes = []
            for stream in (False, True):
                for conc in (1, 64):
                    n = args.requests if conc > 1 else max(200, args.requests // 4)
                    b0 = cpu_s(backend_proc)
                    d = await load(direct, n, conc, stream, "d")
                    b1, g1 = cpu_s(backend_proc), cpu_s(gateway_proc)
                    g = await load(url, n, conc, stream, "g")
                    b2, g2 = cpu_s(backend_proc), cpu_s(gateway_proc)
                    mode = "stream" if stream else "plain"
                    print(f"{mode:<10}{conc:>5} | {d['rps']:>10.0f} {d['p50_ms']:>7.2f} {d['p99_ms']:>7.2f} | "
                          f"{g['rps']:>11.0f} {g['p50_ms']:>7.2f} {g['p99_ms']:>7.2f} | "
                          f"{g['p50_ms'] - d['p50_ms']:>9.2f} {g['p99_ms'] - d['p99_ms']:>9.2f} {g['rps'] / d['rps']:>6.2f}")
                    cpu_notes.append(f"{mode} c{conc}: backend {1000 * (b1 - b0) / n:.2f} ms direct, "
                                     f"{1000 * (b2 - b1) / n:.2f} ms via gateway; gateway {1000 * (g2 - g1) / n:.2f} ms")
            print("CPU per request (user+sys): " + "; ".join(cpu_notes))

            before = await count_outcomes(settings)
            t0 = time.perf_counter()
            await load(url, args.judged, 16, False, "j", tests=TESTS)
            while await count_outcomes(settings) < before + args.judged:
                if time.perf_counter() - t0 > 600:
                    raise SystemExit("judged outcomes did not all arrive within 600 s")
                await asyncio.sleep(0.05)
            judged = args.judged / (time.perf_counter() - t0)
            own = await asyncio.to_thread(sandbox_rate, args.judged, args.workers)
            print(f"judged outcomes/s ({len(TESTS)} tests each, {args.workers} sandbox workers): gateway {judged:.1f}, "
                  f"sandbox alone {own:.1f} (ratio {judged / own:.2f})")
        finally:
            for proc in reversed(procs):  # the gateway first: it would log its backend going away
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="requests per cell at concurrency 64")
    parser.add_argument("--judged", type=int, default=300, help="requests with tests for the outcome rate")
    parser.add_argument("--workers", type=int, default=2, help="sandbox workers (gateway and the baseline)")
    parser.add_argument("--fake-backend", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fake_backend:
        fake_backend(args.fake_backend)
    else:
        asyncio.run(main(args))
