"""Kill the registry in the middle of promotions: after a restart exactly one version is active,
statuses agree with the active pointer, and every recorded transition was published exactly once."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from registry_flowkit import read
from registry_helpers import INFO, NOW, evaluated

from lorafleet.services.registry import core
from lorafleet.services.registry.settings import RegistrySettings

WORKER = Path(__file__).with_name("worker_flip.py")


def start(url: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(WORKER), url], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


async def check_consistent(store, js) -> None:
    state, _ = await store.get("flip")
    active = [v for v, ver in state.versions.items() if ver.status == "active"]
    assert active == [state.active]
    assert all(ver.status == "retired" for v, ver in state.versions.items() if v != state.active)
    assert state.versions[state.active].previous_version != state.active
    transitions = [h for h in state.history if h.action in ("promoted", "rolled_back")]
    published = await read(js, "lorafleet.v1.adapter.promoted") + await read(js, "lorafleet.v1.adapter.rolled_back")
    ids = [e["event_id"] for e in published]
    assert len(ids) == len(set(ids)) == len(transitions)  # none lost, none twice


@pytest.mark.timeout(90)
async def test_kill_mid_promotion_then_restart_is_consistent(nc, store, nats_url):
    js = nc.jetstream()
    s = RegistrySettings(ab_auto_start=False)
    for v in (1, 2, 3):
        await store.apply("flip", lambda st, v=v: core.register(st, evaluated(name="flip", version=v), INFO, v, NOW, s))
    await store.apply("flip", lambda st: core.promote(st, "flip", 1, NOW))
    rng = random.Random(8)
    for _ in range(4):
        proc = start(nats_url)
        time.sleep(rng.uniform(0.2, 0.6))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        state, _ = await store.get("flip")
        assert [v.status for v in state.versions.values()].count("active") == 1  # even before the restart
    proc = start(nats_url)  # the restart publishes what the last kill left in the outbox
    os.killpg(proc.pid, signal.SIGSTOP)  # freeze it to check a quiet state
    try:
        state, _ = await store.get("flip")
        await store.flush("flip")  # in case it was frozen between a write and its publish
        await check_consistent(store, js)
        assert len([h for h in state.history if h.action in ("promoted", "rolled_back")]) > 10
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


async def test_service_start_publishes_what_a_killed_registry_left(nc, store, nats_url, tmp_path):
    """The registry service's start hook sweeps every outbox."""
    from lorafleet.services.registry.app import service
    from lorafleet.shared.settings import Settings

    s = RegistrySettings()
    await store.apply("py", lambda st: core.register(st, evaluated(name="py"), INFO, 1, NOW, s))
    await store.update("py", lambda st: core.promote(st, "py", 1, NOW))  # written, never published
    settings = Settings(nats_url=nats_url, artifact_backend="local", artifact_dir=tmp_path)
    async with service.running(settings):
        promoted = await read(nc.jetstream(), "lorafleet.v1.adapter.promoted")
    assert [e["version"] for e in promoted] == [1]
    assert (await store.get("py"))[0].outbox == []
