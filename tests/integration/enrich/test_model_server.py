"""`lorafleet model serve` with a random-init tiny model + a peft adapter, spoken to over real HTTP."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import aiohttp
import pytest

from lorafleet.services.enrich.cache import AnswerCache
from lorafleet.services.enrich.client import ChatClient, EndpointError
from lorafleet.services.enrich.dataset import enrich_dataset
from lorafleet.services.enrich.pipeline import Target
from lorafleet.shared.config import EnrichSection

MSG = [{"role": "user", "content": "Read n and print n + 1."}]


async def post(url, **body):
    async with aiohttp.ClientSession() as s, s.post(url + "/chat/completions", json=body) as resp:
        return resp.status, (await resp.json() if resp.content_type == "application/json" else await resp.text())


async def test_models_sampling_n_seed_finish_and_usage(model_url):
    async with aiohttp.ClientSession() as s, s.get(model_url + "/models") as resp:
        models = {m["id"]: m for m in (await resp.json())["data"]}
    assert set(models) == {"tiny", "py-lora"} and models["py-lora"]["parent"] == "tiny"

    status, body = await post(model_url, model="tiny", messages=MSG, n=4, max_tokens=6, temperature=1.0, seed=7)
    assert status == 200 and len(body["choices"]) == 4
    again = (await post(model_url, model="tiny", messages=MSG, n=4, max_tokens=6, temperature=1.0, seed=7))[1]
    texts = [c["message"]["content"] for c in body["choices"]]
    assert texts == [c["message"]["content"] for c in again["choices"]]  # seeded: reproducible
    assert len(set(texts)) > 1  # sampled: the n answers differ
    assert all(c["finish_reason"] in ("stop", "length") for c in body["choices"])
    usage = body["usage"]
    assert usage["prompt_tokens"] > 5 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 4 <= usage["completion_tokens"] <= 24
    if all(c["finish_reason"] == "length" for c in body["choices"]):
        assert usage["completion_tokens"] == 24


async def test_greedy_base_and_adapter_differ_and_stream_matches(model_url):
    base = (await post(model_url, model="tiny", messages=MSG, n=2, max_tokens=12, temperature=0))[1]
    lora = (await post(model_url, model="py-lora", messages=MSG, max_tokens=12, temperature=0))[1]
    base_text = base["choices"][0]["message"]["content"]
    assert base["choices"][1]["message"]["content"] == base_text  # greedy: n identical answers
    assert lora["choices"][0]["message"]["content"] != base_text
    assert lora["model"] == "py-lora"

    status, raw = await post(model_url, model="tiny", messages=MSG, max_tokens=12, temperature=0, stream=True,
                             stream_options={"include_usage": True})
    assert status == 200
    payloads = [line[len("data: "):] for line in raw.splitlines() if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == base_text
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == base["choices"][0]["finish_reason"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] >= 1


async def test_bad_requests_are_clear(model_url):
    status, body = await post(model_url, model="gpt-nope", messages=MSG)
    assert status == 404 and "gpt-nope" in body["error"]["message"]
    assert (await post(model_url, model="tiny", messages=MSG, n=0))[0] == 400
    assert (await post(model_url, model="tiny", messages=[]))[0] == 400
    assert "stop" in (await post(model_url, model="tiny", messages=MSG, stop=["\n"]))[1]["error"]["message"]
    async with ChatClient(model_url, "gpt-nope") as client:
        with pytest.raises(EndpointError, match="does not serve model 'gpt-nope'"):
            await client.check()


async def test_runtime_adapter_loading(model_url, tiny_model_pair):
    _, adapter = tiny_model_pair
    async with aiohttp.ClientSession() as s:
        async with s.post(model_url + "/load_lora_adapter", json={"lora_name": "again", "lora_path": str(adapter)}) as r:
            assert r.status == 200
        status, body = await post(model_url, model="again", messages=MSG, max_tokens=4, temperature=0)
        assert status == 200
        async with s.post(model_url + "/unload_lora_adapter", json={"lora_name": "again"}) as r:
            assert r.status == 200
        assert (await post(model_url, model="again", messages=MSG))[0] == 404
        async with s.post(model_url + "/load_lora_adapter", json={"lora_name": "x", "lora_path": "/nowhere"}) as r:
            assert r.status == 400 and "adapter_config.json" in (await r.json())["error"]["message"]


async def test_enrich_runs_against_the_served_model(model_url, tmp_path, example_factory, dataset_writer):
    src = dataset_writer(tmp_path / "ds", [example_factory(i) for i in range(3)])
    cfg = EnrichSection(max_tokens=16, concurrency=2, max_failed_fraction=0.0)
    with AnswerCache.in_data_dir(tmp_path / "data") as cache:
        stats = await enrich_dataset(src, tmp_path / "out", cfg, Target(model_url, "tiny", None), cache)
    assert stats["requests"] == 3 and stats["failed"] == 0
    assert stats["generated"] + stats["rejected"] == 3  # a random-init model mostly rambles to the token limit


async def test_evaluator_openai_backend_against_it(model_url):
    from lorafleet.services.evaluator.backends.openai import OpenAIBackend
    from lorafleet.services.evaluator.models import GenRequest, SamplingParams

    backend = OpenAIBackend(model_url, "tiny", "py-lora", concurrency=2)
    try:
        reqs = [GenRequest(problem_id=f"p{i}", messages=MSG, seed=i) for i in range(2)]
        gens = await backend.generate(reqs, "adapter", SamplingParams(n=3, max_new_tokens=5, temperature=0.8))
    finally:
        await backend.aclose()
    assert [len(g.texts) for g in gens] == [3, 3]
    assert all(1 <= t <= 5 for g in gens for t in g.output_tokens) and gens[0].ttft_s > 0


async def test_cli_model_serve(tiny_model_pair):
    base, adapter = tiny_model_pair
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lorafleet.cli", "model", "serve", str(base), "--adapter", f"py={adapter}",
        "--port", "0", "--name", "tiny", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 120)).decode()
        assert line.startswith("serving tiny, py on http://127.0.0.1:"), line + (await proc.stderr.read()).decode()
        url = line.split(" on ")[1].strip()
        status, body = await post(url, model="py", messages=MSG, max_tokens=3, temperature=0)
        assert status == 200 and body["choices"][0]["finish_reason"] in ("stop", "length")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0


async def test_completions_and_load_inplace(model_url, tiny_model_pair):
    """/v1/completions (plain and streamed, the prompt without a chat template) and vLLM's load_inplace."""
    _, adapter = tiny_model_pair
    async with aiohttp.ClientSession() as s:
        body = {"model": "py-lora", "prompt": "n = int(input())", "max_tokens": 5, "temperature": 0}
        async with s.post(model_url + "/completions", json=body) as r:
            plain = await r.json()
        assert r.status == 200 and plain["object"] == "text_completion" and plain["model"] == "py-lora"
        assert plain["choices"][0]["finish_reason"] in ("stop", "length") and plain["usage"]["completion_tokens"] >= 1
        async with s.post(model_url + "/completions", json={**body, "stream": True}) as r:
            raw = await r.text()
        chunks = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]
        assert all(c["object"] == "text_completion" for c in chunks)
        assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == plain["choices"][0]["text"]
        async with s.post(model_url + "/completions", json={"model": "py-lora"}) as r:
            assert r.status == 400 and "prompt" in (await r.json())["error"]["message"]

        load = {"lora_name": "twice", "lora_path": str(adapter)}
        async with s.post(model_url + "/load_lora_adapter", json=load) as r:
            assert r.status == 200
        async with s.post(model_url + "/load_lora_adapter", json=load) as r:
            assert r.status == 400 and "load_inplace" in (await r.json())["error"]["message"]
        async with s.post(model_url + "/load_lora_adapter", json={**load, "load_inplace": True}) as r:
            assert r.status == 200
        status, _ = await post(model_url, model="twice", messages=MSG, max_tokens=2, temperature=0)
        assert status == 200
        async with s.post(model_url + "/unload_lora_adapter", json={"lora_name": "twice"}) as r:
            assert r.status == 200
