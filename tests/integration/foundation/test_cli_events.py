"""`lorafleet events tail` and `lorafleet status` against a server with real traffic and dead letters."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from lorafleet.shared.bus import publish_event
from lorafleet.shared.service import Service
from lorafleet.shared.events import ArtifactRef, DatasetReady, TrainRequested

LORAFLEET = [sys.executable, "-c", "from lorafleet.cli import main; main()"]


async def cli(*args: str, url: str, cwd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORAFLEET_")} | {"LORAFLEET_NATS_URL": url, "COLUMNS": "200"}
    proc = await __import__("asyncio").create_subprocess_exec(
        *LORAFLEET, *args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


async def test_tail_filters_by_request_and_status_counts_dead_letters(settings, js, h, tmp_path):
    service = Service("ingest")

    @service.handler(TrainRequested)
    async def on_train_requested(event: TrainRequested, ctx) -> list[DatasetReady]:
        return [event.follow(DatasetReady, adapter_name=event.adapter_name, config={}, config_sha256="c",
                             dataset=ArtifactRef(uri="nats-obj://b/ds.tar", sha256="0" * 64))]

    async with service.running(settings) as runner:
        for rid in ("req-A", "req-B"):
            await publish_event(js, TrainRequested(request_id=rid, adapter_name="math-lora", config={}, config_sha256="c"))
        await js.publish("lorafleet.v1.train.requested", b"not json at all")
        await h.wait_for(lambda: runner.processed == 2, what="two requests handled")
        await h.wait_for(lambda: h.subject_counts(js, "lorafleet.v1.dlq.ingest"), what="a dead letter")

    tail = await cli("events", "tail", "--request", "req-A", url=settings.nats_url, cwd=tmp_path)
    assert tail.returncode == 0, tail.stderr
    lines = tail.stdout.strip().splitlines()
    assert len(lines) == 2 and "train.requested" in lines[0] and "dataset.ready" in lines[1]
    assert "math-lora" in lines[0] and "nats-obj://b/ds.tar" in lines[1] and "req-B" not in tail.stdout

    everything = await cli("events", "tail", "--json", "-n", "100", url=settings.nats_url, cwd=tmp_path)
    subjects = [json.loads(line)["subject"] for line in everything.stdout.splitlines()]
    assert subjects.count("lorafleet.v1.dlq.ingest") == 1 and len(subjects) == 6  # 3 in, 2 out, 1 dead letter

    status = await cli("status", "--json", url=settings.nats_url, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    rows = {r["service"]: r for r in json.loads(status.stdout)["services"]}
    assert rows["ingest"]["consumer"] and rows["ingest"]["dead_letters"] == 1 and rows["ingest"]["pending"] == 0
    assert rows["trainer"]["consumer"] is False
    human = await cli("status", url=settings.nats_url, cwd=tmp_path)
    assert human.returncode == 0 and "ingest" in human.stdout and "not started" in human.stdout
