"""A 3-node JetStream cluster on loopback, ready for streams (meta leader elected)."""

from __future__ import annotations

import asyncio
import time

import nats
import pytest

from lorafleet.shared.nats_server import NatsServerError, start_cluster


def start_cluster_retrying(base_dir, size: int = 3, attempts: int = 3):
    """start_cluster picks free ports, then binds them: on a busy machine another process can
    take one in between ("address already in use"). Try again with fresh ports then."""
    for attempt in range(attempts):
        try:
            return start_cluster(base_dir / f"try{attempt}", size=size)
        except NatsServerError as exc:
            if "address already in use" not in str(exc) or attempt == attempts - 1:
                raise


async def wait_jetstream_ready(urls: list[str], timeout: float = 30.0) -> None:
    """start_cluster returns once the ports listen; an R3 stream can be placed only after a
    meta leader is elected and all peers have joined, so probe with one."""
    deadline = time.monotonic() + timeout
    nc = await nats.connect(servers=urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        while True:
            try:
                js = nc.jetstream(timeout=2.0)
                await js.add_stream(name="READY_PROBE", subjects=["ready.probe"], num_replicas=len(urls))
                await js.delete_stream("READY_PROBE")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await nc.close()


@pytest.fixture
async def cluster(tmp_path):
    servers = start_cluster_retrying(tmp_path / "cluster", size=3)
    try:
        await wait_jetstream_ready([s.url for s in servers])
        yield servers
    finally:
        for s in servers:
            s.stop()
