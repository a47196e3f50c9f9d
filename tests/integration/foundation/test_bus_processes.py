"""Service replicas as real processes: a SIGKILL mid-handler, and three replicas sharing 300 messages."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from lorafleet.shared.bus import publish_event
from lorafleet.shared.events import DatasetReady, TrainRequested, derive_id

WORKER = Path(__file__).with_name("worker.py")


def start_worker(mode: str, out_dir: Path, settings, **env: str) -> subprocess.Popen:
    environ = dict(os.environ, LORAFLEET_NATS_URL=settings.nats_url, LORAFLEET_ACK_WAIT_S=str(settings.ack_wait_s),
                   LORAFLEET_MAX_DELIVER="5", LORAFLEET_RETRY_DELAY_S="0", **env)
    return subprocess.Popen([sys.executable, str(WORKER), mode, str(out_dir)], env=environ, start_new_session=True)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def request(i: int) -> TrainRequested:
    return TrainRequested(request_id=f"req-{i}", adapter_name="python-lora", config={}, config_sha256="c")


async def test_sigkill_mid_handler_is_redone_and_recorded_once(settings, js, h, tmp_path):
    event = request(0)
    first = start_worker("die-after-publish", tmp_path, settings)
    try:
        await h.wait_for(lambda: any(tmp_path.glob("ready-*")), timeout=30, what="the worker to start")
        await publish_event(js, event)
        # The handler has published its outcome but not acked: the worst moment to die.
        await h.wait_for(lambda: (tmp_path / "published").exists(), timeout=20, what="the outcome to be published")
    finally:
        stop(first, signal.SIGKILL)
    assert first.returncode == -signal.SIGKILL

    second = start_worker("record", tmp_path, settings)
    try:
        await h.wait_for(lambda: list(tmp_path.glob("*.log")), timeout=30, what="the redelivered job to be redone")
    finally:
        stop(second)
    assert second.returncode == 0, "SIGTERM must stop a service cleanly"
    [log] = list(tmp_path.glob("*.log"))
    assert log.read_text().split() == [event.event_id]
    outcomes = [json.loads(m) for m in await h.messages_on(js, DatasetReady.subject())]
    assert [o["event_id"] for o in outcomes] == [derive_id(event.event_id, "dataset.ready", 0)]
    info = await js.consumer_info("LORAFLEET", "ingest")
    assert info.num_redelivered == 0 and info.num_ack_pending == 0 and info.num_pending == 0
    assert info.delivered.stream_seq >= 1


async def test_three_replica_processes_share_300_messages_exactly_once(settings, js, h, tmp_path):
    procs = [start_worker("record", tmp_path, settings) for _ in range(3)]
    try:
        await h.wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == 3, timeout=60, what="three replicas")

        async def all_pulling() -> bool:
            return (await js.consumer_info("LORAFLEET", "ingest")).num_waiting >= 3

        await h.wait_for(all_pulling, timeout=20, what="three replicas pulling")
        events = [request(i) for i in range(300)]
        await asyncio.gather(*(publish_event(js, e) for e in events))

        def handled() -> int:
            return sum(len(p.read_text().split()) for p in tmp_path.glob("*.log"))

        await h.wait_for(lambda: handled() >= 300, timeout=90, what="300 messages handled")
        await asyncio.sleep(0.5)  # a duplicate delivery, if any, would land now
    finally:
        for p in procs:
            stop(p)
    per_process = {p.name: p.read_text().split() for p in tmp_path.glob("*.log")}
    counts = Counter(i for ids in per_process.values() for i in ids)
    assert set(counts) == {e.event_id for e in events}, "every message handled"
    assert max(counts.values()) == 1, "no message handled twice"
    assert len(per_process) == 3, f"all three replicas took work: {[len(v) for v in per_process.values()]}"
    assert (await h.subject_counts(js, DatasetReady.subject()))[DatasetReady.subject()] == 300
    assert [p.returncode for p in procs] == [0, 0, 0]
