"""The collector's schedule path on a real server: one train.requested per cron period, however many
replicas check, and a clear failure when there is no config to retrain with."""

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from registry_flowkit import read
from registry_helpers import INFO, NOW, evaluated

from lorafleet.services.registry import core
from lorafleet.services.registry.collector import Collector
from lorafleet.services.registry.settings import RegistrySettings
from lorafleet.services.registry.store import RegistryStore
from lorafleet.shared.artifacts import LocalArtifactStore
from lorafleet.shared.config import TrainConfig
from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.events import ProductionOutcome


async def test_scheduled_retrain_once_per_period_across_replicas(nc, tmp_path):
    js = nc.jetstream()
    settings = RegistrySettings(retrain_schedule="0 * * * *", retrain_pool_threshold=1000)
    store = await RegistryStore.open(js, settings)
    config = TrainConfig(adapter_name="py", base_model="tiny").model_dump(mode="json")
    await store.apply("py", lambda s: core.register(s, evaluated(name="py"), INFO, 1, NOW, settings, config))
    await store.apply("py", lambda s: core.promote(s, "py", 1, NOW))
    artifacts = LocalArtifactStore(tmp_path / "art")
    replicas = [await Collector.open(await RegistryStore.open(js, settings), artifacts, verify=None) for _ in range(3)]
    for i in range(3):
        added = await replicas[i].on_outcome(ProductionOutcome(
            request_id="r", adapter_name="py", version=1, request_key=str(i), success=True, confidence=0.97,
            latency_ms=1, problem=f"problem {i}", solution="print(1)"))
        assert added == "added"
    now = datetime.now(timezone.utc)
    assert await replicas[0].check("py", now) is None  # the next tick hasn't come yet
    later = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1, minutes=1)  # just past the next tick
    results = await asyncio.gather(*(r.check("py", later) for r in replicas))
    results += await asyncio.gather(*(r.check("py", later + timedelta(minutes=30)) for r in replicas))
    requested = await read(js, "lorafleet.v1.train.requested")
    assert len(requested) == 1 and requested[0]["config"]["adapter_name"] == "py"
    assert sum(r is not None for r in results) >= 1
    status = await replicas[1].status("py")
    assert status["triggers"] == 1 and status["last_trigger_kind"] == "schedule" and status["pool_size"] == 3
    # the next hour is a new period
    assert await replicas[2].on_outcome(ProductionOutcome(
        request_id="r", adapter_name="py", version=1, request_key="n", success=True, confidence=0.97, latency_ms=1,
        problem="new", solution="print(2)")) == "added"
    assert await replicas[2].check("py", later + timedelta(hours=1)) is not None
    assert len(await read(js, "lorafleet.v1.train.requested")) == 2


async def test_no_training_config_is_a_clear_error(nc, tmp_path):
    js = nc.jetstream()
    settings = RegistrySettings(retrain_pool_threshold=1)
    store = await RegistryStore.open(js, settings)
    await store.apply("py", lambda s: core.register(s, evaluated(name="py"), INFO, 1, NOW, settings))
    collector = await Collector.open(store, LocalArtifactStore(tmp_path), verify=None)
    await collector.on_outcome(ProductionOutcome(request_id="r", adapter_name="py", version=1, request_key="k",
                                                 success=True, confidence=0.99, latency_ms=1, problem="p",
                                                 solution="print(1)"))
    with pytest.raises(LorafleetError, match="LORAFLEET_REGISTRY_RETRAIN_CONFIGS"):
        await collector.check("py")
    assert await read(js, "lorafleet.v1.train.requested") == []
