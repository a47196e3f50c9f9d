"""The runtime adapter API as the gateway uses it, against a vLLM server started by
`lorafleet model serve --engine vllm`.

The gateway (issue 17) materialises a registered version into the backend's
adapter directory, POSTs `{lora_name, lora_path}` to `<backend>/load_lora_adapter`
once per version before its first request, sends chat completions with
`model=<version name>`, and POSTs `{lora_name}` to `<backend>/unload_lora_adapter`
when the version is retired. `backend_url` is the one seam: to run this against
the gateway in front of vLLM, override it with a fixture that starts the
gateway with LORAFLEET_GATEWAY_BACKENDS=<server.url> and returns where the
gateway loads adapters from (see docs/notes/issue-19.md).
"""

from __future__ import annotations

import json
import shutil

import aiohttp
import pytest

from lorafleet.shared.prompts import SYSTEM_PROMPT

BASE_NAME, ADAPTER_NAME = "tiny", "tiny-lora"  # as in conftest.py
MESSAGES = [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "Read a line of integers and print their sum plus 3."}]
pytestmark = pytest.mark.timeout(1200)  # the session's server start may be charged to this test


@pytest.fixture
def backend_url(server) -> str:
    """Where adapters are loaded and chat requests go: the vLLM server itself here."""
    return server.url


async def _post(s: aiohttp.ClientSession, url: str, body: dict) -> tuple[int, str]:
    async with s.post(url, json=body) as r:
        return r.status, await r.text()


async def _chat(s: aiohttp.ClientSession, url: str, model: str, stream: bool = False) -> tuple[int, str]:
    body = {"model": model, "messages": MESSAGES,
            "max_tokens": 8, "temperature": 0.0, "stream": stream}
    async with s.post(url + "/chat/completions", json=body) as r:
        if r.status != 200 or not stream:
            text = await r.text()
            return r.status, (json.loads(text)["choices"][0]["message"]["content"] if r.status == 200 else text)
        pieces = []
        async for raw in r.content:
            line = raw.decode().strip()
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                chunk = json.loads(line[5:])
                pieces += [c["delta"].get("content") or "" for c in chunk["choices"]]
        return r.status, "".join(pieces)


async def test_versions_load_serve_reload_and_unload_at_run_time(backend_url, tiny_pair, tmp_path):
    base, adapter = tiny_pair
    # a "registered version" materialised into its own directory, as the gateway does
    version_dir = tmp_path / "python-lora-v1"
    shutil.copytree(adapter, version_dir)
    name = "python-lora@v1"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as s:
        status, text = await _chat(s, backend_url, name)
        assert status == 404, text  # not loaded yet

        status, text = await _post(s, backend_url + "/load_lora_adapter", {"lora_name": name, "lora_path": str(version_dir)})
        assert status == 200, text
        async with s.get(backend_url + "/models") as r:
            assert name in {m["id"] for m in (await r.json())["data"]}

        status, plain = await _chat(s, backend_url, name)
        assert status == 200 and plain
        status, streamed = await _chat(s, backend_url, name, stream=True)
        assert status == 200 and streamed == plain
        status, base_text = await _chat(s, backend_url, BASE_NAME)
        assert status == 200 and base_text != plain  # the version is not the base model

        # loading the same name twice is refused; load_inplace replaces it (a re-materialised version)
        status, text = await _post(s, backend_url + "/load_lora_adapter", {"lora_name": name, "lora_path": str(version_dir)})
        assert status == 400 and "already" in text.lower(), text
        status, text = await _post(s, backend_url + "/load_lora_adapter",
                                   {"lora_name": name, "lora_path": str(version_dir), "load_inplace": True})
        assert status == 200, text
        assert (await _chat(s, backend_url, name)) == (200, plain)

        # retired: unloaded, then unknown
        status, text = await _post(s, backend_url + "/unload_lora_adapter", {"lora_name": name})
        assert status == 200, text
        status, text = await _chat(s, backend_url, name)
        assert status == 404, text
        async with s.get(backend_url + "/models") as r:
            assert name not in {m["id"] for m in (await r.json())["data"]}
