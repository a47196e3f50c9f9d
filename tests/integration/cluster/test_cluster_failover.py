"""A 3-node nats-server cluster on loopback; the stream and a KV bucket at 3 replicas.

A batch of jobs runs through two replicas of a real bus service (shared/bus.py
runner) while the stream's leader is SIGKILLed and restarted. Nothing may be
lost (every job has its outcome and its registry entry), nothing may be
duplicated (one outcome per job in the stream, one KV entry per job), and the
restarted node must catch up. The registry entry is a KV `create`, the same
compare-and-set the registry uses: a redelivered job finds its entry and does
not register again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import nats
import pytest
from nats.js import api
from nats.js.errors import KeyWrongLastSequenceError

from lorafleet.shared.bus import publish_event
from lorafleet.shared.service import Service
from lorafleet.shared.events import STREAM, AdapterRegistered, TrainRequested
from lorafleet.shared.settings import Settings

pytestmark = pytest.mark.timeout(120)

JOBS = 60
BUCKET = "cluster-test-registry"


def _settings(cluster, tmp_path) -> Settings:
    return Settings(
        nats_url=",".join(s.url for s in cluster), stream_replicas=3, data_dir=tmp_path / "data",
        artifact_backend="local", ack_wait_s=4.0, max_deliver=50, retry_delay_s=0.2,
        publish_timeout_s=2.0, connect_timeout_s=2.0,
    )


async def _retrying(fn, *, deadline_s: float = 30.0):
    """What a client does while a leader election is in progress: retry the same call."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return await fn()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def _registering_service(attempts: dict[str, int]) -> Service:
    service = Service("clusterjob")

    @service.on_start
    async def open_registry(ctx) -> None:
        ctx.deps = await _retrying(lambda: ctx.js.create_key_value(bucket=BUCKET, replicas=3, history=1))

    @service.handler(TrainRequested)
    async def on_train_requested(event: TrainRequested, ctx) -> list[AdapterRegistered]:
        attempts[event.event_id] = attempts.get(event.event_id, 0) + 1
        kv = await ctx.js.key_value(BUCKET)
        try:
            await kv.create(event.adapter_name, event.event_id.encode())
        except KeyWrongLastSequenceError:
            pass  # registered by an earlier delivery whose ack was lost
        return [event.follow(AdapterRegistered, adapter_name=event.adapter_name, version=1, lora_int_id=1, status="inactive")]

    return service


def _job(i: int) -> TrainRequested:
    return TrainRequested(request_id=f"req-{i}", adapter_name=f"job-{i:03d}", config={}, config_sha256="x", reason="manual")


async def _stream_leader(js) -> str:
    info = await js.stream_info(STREAM)
    return info.cluster.leader


async def _wait_new_leader(js, old: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            leader = await _stream_leader(js)
            if leader and leader != old:
                return leader
        await asyncio.sleep(0.2)
    raise AssertionError(f"no new stream leader within {timeout}s after killing {old}")


async def _outcomes(js) -> list[AdapterRegistered]:
    """Every adapter.registered message in the stream (an ordered, ephemeral read)."""
    info = await js.stream_info(STREAM, subjects_filter=AdapterRegistered.subject())
    total = sum((info.state.subjects or {}).values())
    if total == 0:
        return []
    sub = await js.subscribe(AdapterRegistered.subject(), ordered_consumer=True, deliver_policy=api.DeliverPolicy.ALL)
    out = []
    try:
        while len(out) < total:
            msg = await sub.next_msg(timeout=5)
            out.append(AdapterRegistered.model_validate_json(msg.data))
    finally:
        await sub.unsubscribe()
    return out


async def test_jobs_survive_killing_and_restarting_the_stream_leader(cluster, tmp_path):
    settings = _settings(cluster, tmp_path)
    attempts: dict[str, int] = {}
    service = _registering_service(attempts)
    nc = await nats.connect(servers=[s.url for s in cluster], max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream()
    try:
        async with service.running(settings) as r1, service.running(settings) as r2:
            leader_name = await _stream_leader(js)
            leader = next(s for s in cluster if s.server_name == leader_name)
            jobs = [_job(i) for i in range(JOBS)]
            for i, job in enumerate(jobs):
                if i == JOBS // 3:
                    leader.kill()  # SIGKILL: no graceful step-down
                    await _wait_new_leader(js, leader_name)
                if i == 2 * JOBS // 3:
                    leader.start()
                await _retrying(lambda job=job: publish_event(js, job, timeout=2.0))
            # Producers retry after a timeout whose publish may have landed: send a few again.
            for job in jobs[:10]:
                ack = await _retrying(lambda job=job: publish_event(js, job, timeout=2.0))
                assert ack.duplicate, "the Nats-Msg-Id window must drop a re-sent job"

            deadline = time.monotonic() + 60
            registered: list[AdapterRegistered] = []
            while time.monotonic() < deadline:
                registered = await _retrying(lambda: _outcomes(js))
                if len(registered) >= JOBS:
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(1.0)  # late duplicates, if any, would land now
            registered = await _retrying(lambda: _outcomes(js))
            processed = r1.processed + r2.processed

        assert sorted(e.adapter_name for e in registered) == sorted(j.adapter_name for j in jobs), (
            f"{len(registered)} outcomes for {JOBS} jobs")
        kv = await js.key_value(BUCKET)
        # The keys as the server counts them: nats-py's kv.keys() ends at its "initial values done"
        # marker, which can race ahead of the entries under load and miss some (seen once in CI).
        info = await _retrying(lambda: js.stream_info(f"KV_{BUCKET}", subjects_filter=f"$KV.{BUCKET}.>"))
        keys = [subject.removeprefix(f"$KV.{BUCKET}.") for subject in (info.state.subjects or {})]
        assert sorted(keys) == sorted(j.adapter_name for j in jobs)
        for job in jobs[:: JOBS // 6]:
            entry = await kv.get(job.adapter_name)
            assert entry.value.decode() == job.event_id
        assert set(attempts) == {j.event_id for j in jobs}
        assert processed >= JOBS
        # Both replicas shared the work.
        assert r1.processed > 0 and r2.processed > 0

        info = await js.stream_info(STREAM)
        assert info.config.num_replicas == 3
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            info = await js.stream_info(STREAM)
            if len(info.cluster.replicas or []) == 2 and all(p.current for p in info.cluster.replicas):
                break
            await asyncio.sleep(0.5)
        assert all(p.current for p in info.cluster.replicas), "the restarted node did not catch up"
    finally:
        await nc.close()


async def test_kv_at_three_replicas_survives_losing_its_leader(cluster):
    nc = await nats.connect(servers=[s.url for s in cluster], max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream()
    try:
        kv = await js.create_key_value(bucket="r3", replicas=3, history=5)
        revisions = {f"adapter-{i}": await kv.create(f"adapter-{i}", b"v1") for i in range(20)}
        leader_name = (await js.stream_info("KV_r3")).cluster.leader
        leader = next(s for s in cluster if s.server_name == leader_name)
        leader.kill()
        # 2 of 3 is a quorum: reads and compare-and-set keep working, stale writes are refused.
        entry = await _retrying(lambda: kv.get("adapter-3"))
        assert entry.value == b"v1"
        new_rev = await _retrying(lambda: kv.update("adapter-3", b"v2", last=revisions["adapter-3"]))
        with pytest.raises(KeyWrongLastSequenceError):
            await kv.update("adapter-3", b"lost-update", last=revisions["adapter-3"])
        leader.start()
        entries = {k: (await _retrying(lambda k=k: kv.get(k))).value for k in revisions}
        assert entries == {**{k: b"v1" for k in revisions}, "adapter-3": b"v2"}
        assert (await kv.get("adapter-3")).revision == new_rev
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            info = await js.stream_info("KV_r3")
            if info.cluster.replicas and len(info.cluster.replicas) == 2 and all(p.current for p in info.cluster.replicas):
                break
            await asyncio.sleep(0.5)
        assert info.config.num_replicas == 3 and all(p.current for p in info.cluster.replicas)
    finally:
        await nc.close()
