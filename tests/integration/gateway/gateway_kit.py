"""Helpers for the gateway's integration tests (imported by name: pytest runs with importlib mode)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import aiohttp

from lorafleet.shared.settings import Settings

MSG = [{"role": "user", "content": "Read n and print n + 3."}]

def stop_group(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def register_versions(settings: Settings, name: str, tiny: dict[str, Path], versions=(1, 2)) -> None:
    """v1 registered and promoted, then v2 registered: an A/B test of v2 against v1 (registry's own flow)."""
    from lorafleet.services.registry import core
    from lorafleet.services.registry.settings import RegistrySettings
    from lorafleet.services.registry.store import RegistryStore, now
    from lorafleet.shared.artifacts import open_store
    from lorafleet.shared.bus import connect, publish_event
    from lorafleet.shared.events import AdapterEvaluated, GateCriterion

    nc = await connect(settings)
    try:
        js = nc.jetstream()
        store = await RegistryStore.open(js, RegistrySettings())
        artifacts = open_store(settings, js=js)
        for v in versions:
            ref = await artifacts.put_dir(tiny[f"v{v}"], f"adapters/{name}/v{v}")
            await publish_event(js, AdapterEvaluated(
                request_id=f"train-{name}-{v}", adapter_name=name, version=v, adapter=ref, base_model="tiny",
                rank=4 * v, target_modules=["q_proj", "v_proj"], gate_passed=True, domains=["python"],
                gate=[GateCriterion(name="pass@1 delta", measured=0.2, threshold=0.05, comparison=">=", passed=True)]))
            for _ in range(600):
                state, _ = await store.get(name)
                if state is not None and v in state.versions:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"the registry did not register {name} v{v}")
            if v != versions[-1]:
                await store.apply(name, lambda s, v=v: core.promote(s, name, v, now()))
    finally:
        await nc.close()


async def wait_route(gateway, name: str, candidate: int, timeout: float = 30.0) -> None:
    """Until the gateway's router (KV watch) sees the A/B test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        table = gateway.router.tables.get(name)
        if table is not None and table.candidate is not None and table.candidate.version == candidate:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the gateway never saw {name}'s A/B test of v{candidate}")


async def health(url: str) -> dict:
    async with aiohttp.ClientSession() as s, s.get(url.removesuffix("/v1") + "/health") as r:
        return await r.json()
