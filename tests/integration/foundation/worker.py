"""A bus service in its own process, for the crash and replica tests.

usage: python worker.py MODE OUT_DIR   (NATS URL and bus settings from LORAFLEET_* env)
  record       append each handled event_id to OUT_DIR/<pid>.log, return dataset.ready
  die-after-publish  publish the outcome, then hang (the test SIGKILLs us before the ack)
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from lorafleet.shared.service import Context, Service
from lorafleet.shared.events import ArtifactRef, DatasetReady, TrainRequested
from lorafleet.shared.settings import get_settings

mode, out_dir = sys.argv[1], Path(sys.argv[2])
service = Service("ingest", concurrency=int(os.environ.get("WORKER_CONCURRENCY", "1")))


def outcome(event: TrainRequested) -> DatasetReady:
    return event.follow(DatasetReady, adapter_name=event.adapter_name, config={}, config_sha256="c",
                        dataset=ArtifactRef(uri=f"file:///datasets/{event.event_id}", sha256="0" * 64))


@service.handler(TrainRequested)
async def on_train_requested(event: TrainRequested, ctx: Context) -> list[DatasetReady]:
    if mode == "die-after-publish":
        await ctx.publish(outcome(event))
        (out_dir / "published").write_text(event.event_id)
        await asyncio.sleep(3600)
    await asyncio.sleep(0.005)
    with open(out_dir / f"{os.getpid()}.log", "a") as fh:
        fh.write(event.event_id + "\n")
    return [outcome(event)]


@service.on_start
async def ready(ctx: Context) -> None:
    (out_dir / f"ready-{os.getpid()}").touch()


if __name__ == "__main__":
    asyncio.run(service.run(get_settings()))
