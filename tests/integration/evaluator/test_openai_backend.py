"""The OpenAI-compatible backend against a real local HTTP server (aiohttp), with
scripted 429 / 500 / slow / truncated responses."""

import asyncio
import json
import sys
from pathlib import Path

import pytest
from aiohttp import web

from lorafleet.services.evaluator.backends.base import BackendError
from lorafleet.services.evaluator.backends.openai import EndpointRequestError, OpenAIBackend
from lorafleet.services.evaluator.models import GenRequest, SamplingParams


class FakeServer:
    """A chat-completions server that streams `n` choices; `script` holds failure modes for the next requests."""

    def __init__(self):
        self.script: list[str] = []
        self.bodies: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.loaded: list[str] = []
        self.delay = 0.0
        self.solutions: dict[str, str] = {}  # statement -> reference solution (the "adapter" knows them)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        mode = self.script.pop(0) if self.script else "ok"
        if mode == "429":
            return web.json_response({"error": "rate limited"}, status=429, headers={"Retry-After": "0"})
        if mode == "500":
            return web.json_response({"error": "boom"}, status=500)
        if body["model"] not in ("base-model", "python-lora"):
            return web.json_response({"error": f"model {body['model']} does not exist"}, status=404)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if mode == "hang":
                await asyncio.sleep(1.0)
            await asyncio.sleep(self.delay)
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            pieces = ["```python\n", "print(", repr(f"{body['model']}-{body['seed']}"), ")\n", "```"]
            user = body["messages"][-1]["content"]
            known = next((code for statement, code in self.solutions.items() if statement in user), None)
            if known is not None:
                pieces = ["Solution:\n```python\n", known, "\n```"] if body["model"] == "python-lora" else ["I am not sure."]
            for piece in pieces:
                for i in range(body["n"]):
                    chunk = {"choices": [{"index": i, "delta": {"content": piece}, "finish_reason": None}]}
                    await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
                await asyncio.sleep(0.002)
                if mode == "truncate":
                    return resp
            await resp.write(b'data: {"choices": [], "usage": {"completion_tokens": 10}}\n\n')
            await resp.write(b"data: [DONE]\n\n")
            return resp
        finally:
            self.in_flight -= 1

    async def load(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body["lora_name"] in self.loaded:
            return web.Response(status=400, text=f"The lora adapter '{body['lora_name']}' has already been loaded.")
        self.loaded.append(body["lora_name"])
        return web.Response(text="ok")


@pytest.fixture
async def server():
    fake = FakeServer()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.chat)
    app.router.add_post("/v1/load_lora_adapter", fake.load)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    fake.url = f"http://127.0.0.1:{port}/v1"
    yield fake
    await runner.cleanup()


def requests(k=3):
    return [GenRequest(problem_id=f"p{i}", messages=[{"role": "user", "content": f"q{i}"}], seed=100 + i) for i in range(k)]


def backend(server, **kw):
    kw.setdefault("backoff_s", 0.01)
    return OpenAIBackend(server.url, "base-model", "python-lora", **kw)


async def test_streams_n_samples_for_base_and_adapter(server):
    b = backend(server)
    params = SamplingParams(n=3, temperature=0.7, top_p=0.9, max_new_tokens=64)
    try:
        base = await b.generate(requests(), "base", params)
        adapter = await b.generate(requests(), "adapter", params)
    finally:
        await b.aclose()
    assert [len(g.texts) for g in base] == [3, 3, 3]
    assert base[1].texts[0] == "```python\nprint('base-model-101')\n```"
    assert adapter[2].texts[2] == "```python\nprint('python-lora-102')\n```"
    assert base[0].output_tokens == [5, 5, 5]
    assert all(g.ttft_s and g.ttft_s > 0 and g.tpot_s and g.tpot_s > 0 for g in base + adapter)
    sent = server.bodies[0]
    assert (sent["n"], sent["temperature"], sent["top_p"], sent["max_tokens"], sent["seed"], sent["stream"]) == (3, 0.7, 0.9, 64, 100, True)
    assert {b["model"] for b in server.bodies} == {"base-model", "python-lora"}


async def test_retries_429_500_and_truncated_streams(server):
    server.script = ["429", "500", "truncate"]
    b = backend(server)
    try:
        (g,) = await b.generate(requests(1), "adapter", SamplingParams(n=2))
    finally:
        await b.aclose()
    assert g.texts == ["```python\nprint('python-lora-100')\n```"] * 2
    assert b.retries == 3 and len(server.bodies) == 4


async def test_timeout_is_retried(server):
    server.script = ["hang"]
    b = backend(server, timeout_s=0.3)
    try:
        (g,) = await b.generate(requests(1), "base", SamplingParams(n=1))
    finally:
        await b.aclose()
    assert g.texts[0].startswith("```python") and b.retries == 1


async def test_gives_up_after_max_retries(server):
    server.script = ["500"] * 10
    b = backend(server, max_retries=2)
    try:
        with pytest.raises(BackendError, match="failed after 3 attempts; last error: HTTP 500"):
            await b.generate(requests(1), "base", SamplingParams(n=1))
    finally:
        await b.aclose()
    assert len(server.bodies) == 3


async def test_client_errors_fail_at_once(server):
    b = OpenAIBackend(server.url, "base-model", "not-loaded", backoff_s=0.01)
    try:
        with pytest.raises(EndpointRequestError, match="HTTP 404"):
            await b.generate(requests(1), "adapter", SamplingParams(n=1))
    finally:
        await b.aclose()
    assert len(server.bodies) == 1


async def test_concurrency_is_bounded(server):
    server.delay = 0.05
    b = backend(server, concurrency=2)
    try:
        gens = await b.generate(requests(6), "base", SamplingParams(n=1))
    finally:
        await b.aclose()
    assert len(gens) == 6 and server.max_in_flight == 2


async def test_runtime_adapter_loading_is_idempotent(server):
    b = backend(server)
    try:
        await b.load_adapter("python-lora", "/adapters/python-lora/v1")
        await b.load_adapter("python-lora", "/adapters/python-lora/v1")
    finally:
        await b.aclose()
    assert server.loaded == ["python-lora"]


async def test_eval_run_cli_against_an_openai_endpoint(server, heldout_problems, tmp_path):
    """`lorafleet eval run --backend openai` end to end: a server whose adapter model answers
    correctly and whose base model writes no code; the real sandbox judges."""
    path, problems = heldout_problems
    server.solutions = {p.statement: p.solutions[0] for p in problems}
    exe = Path(sys.executable).parent / "lorafleet"
    proc = await asyncio.create_subprocess_exec(
        str(exe), "eval", "run", "--backend", "openai", "--endpoint", server.url, "--base", "base-model",
        "--adapter", "python-lora", "--problems", str(path), "--n", "3", "--k", "1,3", "--out", str(tmp_path / "r"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    m = report["metrics"]
    assert m["adapter"]["pass@1"] == 1.0 and m["adapter"]["greedy_pass@1"] == 1.0 and m["adapter"]["error_rate"] == 0.0
    assert m["base"]["pass@1"] == 0.0 and m["base"]["errors"]["syntax_error"] == 3 * len(problems)  # prose = the whole text
    assert m["delta_pass@1"]["mean"] == 1.0
    assert m["latency_increase"] is not None
    gate = {c["name"]: c["passed"] for c in report["gate"]["criteria"]}
    assert gate["pass@1"] and gate["delta_pass@1"] and gate["error_rate"]
    greedy = [b for b in server.bodies if b["n"] == 1]
    assert greedy and all(b["temperature"] == 0.0 for b in greedy)
