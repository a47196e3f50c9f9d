"""Outcomes are counted exactly once per stream message across crashes and restarts of the recorder."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from registry_helpers import INFO, NOW, evaluated

from lorafleet.services.registry import core
from lorafleet.services.registry.core import Outcome
from lorafleet.services.registry.outcomes import OUTCOME_SUBJECT, OutcomeRecorder
from lorafleet.shared.bus import publish_event
from lorafleet.shared.events import STREAM, ProductionOutcome

WORKER = Path(__file__).with_name("worker_recorder.py")


async def publish(js, n: int, start: int = 0) -> int:
    acks = await asyncio.gather(*(publish_event(js, ProductionOutcome(
        request_id="r", adapter_name="py", version=1, request_key=str(i), success=i % 2 == 0,
        confidence=0.5, latency_ms=1.0)) for i in range(start, start + n)))
    return max(a.seq for a in acks)


async def wait_counted(store, n: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state, _ = await store.get("py")
        if state.versions[1].metrics.requests >= n:
            await asyncio.sleep(0.3)  # anything counted twice would show up now
            return (await store.get("py"))[0].versions[1].metrics.requests
        await asyncio.sleep(0.05)
    raise AssertionError(f"only {(await store.get('py'))[0].versions[1].metrics.requests} of {n} outcomes counted")


@pytest.mark.timeout(120)
async def test_recorder_killed_mid_stream_counts_each_outcome_once(nc, store, nats_url, registry_settings):
    js = nc.jetstream()
    await store.apply("py", lambda s: core.register(s, evaluated(name="py"), INFO, 1, NOW, registry_settings))
    await publish(js, 3000)
    for mark in (500, 1200, 2000):  # kill it three times while it works through the stream
        proc = subprocess.Popen([sys.executable, str(WORKER), nats_url, "7"], stdout=subprocess.PIPE, text=True,
                                start_new_session=True)
        assert proc.stdout.readline().strip() == "ready"
        while (await store.get("py"))[0].versions[1].metrics.requests < mark:
            await asyncio.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (await store.get("py"))[0].versions[1].metrics.requests < 3000  # it really was interrupted
    recorder = await OutcomeRecorder(store).start()
    try:
        assert await wait_counted(store, 3000) == 3000
        assert (await store.get("py"))[0].versions[1].metrics.successes == 1500
    finally:
        await recorder.stop()


async def test_batch_written_but_cursor_not_moved_is_not_recounted(nc, store, registry_settings):
    js = nc.jetstream()
    await store.apply("py", lambda s: core.register(s, evaluated(name="py"), INFO, 1, NOW, registry_settings))
    last = await publish(js, 100)
    first = last - 99
    # A recorder that died after writing the entry but before saving the cursor:
    items = [Outcome(seq=s, version=1, success=True, latency_ms=1.0) for s in range(first, first + 60)]
    await store.update("py", lambda s: core.apply_outcomes(s, "py", items, registry_settings, NOW))
    assert await store.cursor() == 0
    recorder = await OutcomeRecorder(store).start()
    try:
        await recorder.wait_for(last)
        state, _ = await store.get("py")
        assert state.versions[1].metrics.requests == 100 and state.outcome_seq == last
        assert await store.cursor() == last == (await js.get_last_msg(STREAM, OUTCOME_SUBJECT)).seq
    finally:
        await recorder.stop()
