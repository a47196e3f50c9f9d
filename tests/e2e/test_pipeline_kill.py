"""Faults in the middle of a pipeline run, with every service its own process:

- a batch of jobs goes through ingest → enrich → trainer → evaluator → registry on a
  3-node JetStream cluster (stream, KV buckets and object store at 3 replicas);
- each service is SIGKILLed once while it holds its first job's message, and restarted;
- the stream's leader server is SIGKILLed mid-run and restarted;
- a service that exits on its own (e.g. it started during the leader election and
  could not create its consumer) is restarted, as `lorafleet up`, compose and
  Kubernetes do.

Every job still completes, with one outcome per stage in the stream and exactly
one registry version per adapter: redelivery + Nats-Msg-Id dedup + idempotent
handlers, not luck.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from pathlib import Path

import nats
import pytest

from lorafleet.fleet import SERVICES
from lorafleet.shared.bus import ensure_stream, publish_event
from lorafleet.shared.events import STREAM, TrainRequested
from lorafleet.shared.settings import Settings

from e2e_support import Fleet, count_in_stream as _count, tiny_pipeline_config, unique_in_stream as _unique_in_stream

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

JOBS = 2
# The event that hands work to each service, and what it publishes when done.
INPUT_OF = {"ingest": "train.requested", "enrich": "dataset.ready", "trainer": "dataset.enriched",
            "evaluator": "adapter.trained", "registry": "adapter.evaluated"}
OUTPUTS = ("dataset.ready", "dataset.enriched", "adapter.trained", "adapter.evaluated")


def _cluster_helpers():
    path = Path(__file__).resolve().parents[1] / "integration" / "cluster" / "conftest.py"
    spec = importlib.util.spec_from_file_location("lorafleet_cluster_helpers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_killing_each_service_and_the_stream_leader_mid_run_loses_and_duplicates_nothing(tmp_path):
    assert set(INPUT_OF) == set(SERVICES)
    servers = _cluster_helpers().start_cluster_retrying(tmp_path / "cluster", size=3)
    urls = [s.url for s in servers]
    fleet = Fleet(",".join(urls), tmp_path / "data", env={
        "LORAFLEET_STREAM_REPLICAS": "3", "LORAFLEET_ACK_WAIT_S": "5", "LORAFLEET_MAX_DELIVER": "10",
        "LORAFLEET_RETRY_DELAY_S": "0.5", "LORAFLEET_PUBLISH_TIMEOUT_S": "3"})
    nc = None
    try:
        await _cluster_helpers().wait_jetstream_ready(urls)
        settings = Settings(nats_url=",".join(urls), data_dir=tmp_path / "data", stream_replicas=3)
        nc = await nats.connect(servers=urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        js = nc.jetstream()
        await ensure_stream(js, settings)
        for service in SERVICES:
            fleet.start(service)
        names = [f"job-{i}" for i in range(JOBS)]
        for name in names:
            await publish_event(js, TrainRequested(request_id=name, adapter_name=name,
                                                   config=tiny_pipeline_config(name), config_sha256=name))

        killed: set[str] = set()
        leader_killed = False
        deadline = time.monotonic() + 400
        while len(killed) < len(SERVICES) or not leader_killed:
            assert time.monotonic() < deadline, f"killed only {sorted(killed)}, leader {leader_killed}\n{fleet.logs()}"
            assert await _count(js, "training.failed") <= 0, fleet.logs()
            fleet.revive()
            for service, input_type in INPUT_OF.items():
                if service not in killed and await _count(js, input_type) >= 1:
                    await asyncio.sleep(0.3)  # let it take the message: the kill lands mid-handling
                    (replica,) = fleet.of(service)
                    fleet.kill(replica)
                    killed.add(service)
                    fleet.restart(replica)
            if not leader_killed and "trainer" in killed:
                leader_name = (await js.stream_info(STREAM)).cluster.leader
                leader = next(s for s in servers if s.server_name == leader_name)
                leader.kill()
                leader_killed = True
                await asyncio.sleep(3.0)
                leader.start()
            await asyncio.sleep(0.2)

        while True:
            done = max(0, await _count(js, "adapter.registered")) + max(0, await _count(js, "adapter.rejected"))
            if done >= JOBS:
                break
            assert time.monotonic() < deadline, f"{done}/{JOBS} registry outcomes\n{fleet.logs()}"
            assert await _count(js, "training.failed") <= 0, fleet.logs()
            fleet.revive()
            await asyncio.sleep(0.5)
        await asyncio.sleep(3.0)  # a duplicate from a redelivered job would land now

        for event_type in OUTPUTS:
            got = sorted(e["adapter_name"] for e in await _unique_in_stream(js, event_type))
            assert got == names, f"{event_type}: {got}"
        outcomes = await _unique_in_stream(js, "adapter.registered") + await _unique_in_stream(js, "adapter.rejected")
        assert sorted(e["adapter_name"] for e in outcomes) == names

        from lorafleet.services.registry.model import AdapterState
        from lorafleet.services.registry.settings import RegistrySettings

        kv = await js.key_value(RegistrySettings().bucket)
        for name in names:
            state = AdapterState.model_validate_json((await kv.get(f"adapter.{name}")).value)
            assert list(state.versions) == [1], f"{name}: versions {list(state.versions)}"
        assert (await js.stream_info(STREAM)).config.num_replicas == 3
        assert all(r.kills == 1 for r in fleet.replicas)
    finally:
        fleet.stop()
        if nc is not None:
            await nc.close()
        for s in servers:
            s.stop()
