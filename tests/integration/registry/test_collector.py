"""The collector's schedule path on a real server: one train.requested per cron period, however many
replicas check, and a clear failure when there is no config to retrain with."""

import asyncio
import json
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
    await store.apply("py", lambda s: core.promote(s, "py", 1, NOW))  # no A/B test open: the check would wait
    collector = await Collector.open(store, LocalArtifactStore(tmp_path), verify=None)
    await collector.on_outcome(ProductionOutcome(request_id="r", adapter_name="py", version=1, request_key="k",
                                                 success=True, confidence=0.99, latency_ms=1, problem="p",
                                                 solution="print(1)"))
    with pytest.raises(LorafleetError, match="LORAFLEET_REGISTRY_RETRAIN_CONFIGS"):
        await collector.check("py")
    assert await read(js, "lorafleet.v1.train.requested") == []


async def retraining_collector(js, tmp_path, threshold: int, kv=None) -> Collector:
    settings = RegistrySettings(retrain_pool_threshold=threshold)
    store = await RegistryStore.open(js, settings)
    config = TrainConfig(adapter_name="py", base_model="tiny").model_dump(mode="json")
    if (await store.get("py"))[0] is None:
        await store.apply("py", lambda s: core.register(s, evaluated(name="py"), INFO, 1, NOW, settings, config))
        await store.apply("py", lambda s: core.promote(s, "py", 1, NOW))
    collector = await Collector.open(store, LocalArtifactStore(tmp_path / "art"), verify=None)
    if kv is not None:
        collector.kv = kv(collector.kv)
    return collector


def candidate(i: int) -> ProductionOutcome:
    return ProductionOutcome(request_id="r", adapter_name="py", version=1, request_key=f"k{i}", success=True,
                             confidence=0.97, latency_ms=1, problem=f"problem {i}", solution=f"print({i})")


async def pooled(collector: Collector, uri: str, dest) -> set[str]:
    path = await collector.artifacts.get_file(uri, dest)
    return {json.loads(line)["id"] for line in path.read_text().splitlines()}


class AddDuringSnapshot:
    """The real pool bucket, with one more candidate committed the moment a snapshot starts reading:
    an add that lands between the trigger decision and the snapshot."""

    def __init__(self, kv) -> None:
        self._kv, self.add = kv, None

    def __getattr__(self, name):
        return getattr(self._kv, name)

    async def watch(self, *args, **kwargs):
        if self.add is not None:
            add, self.add = self.add, None
            await add()
        return await self._kv.watch(*args, **kwargs)


async def test_pool_trigger_snapshot_and_watermark_agree(nc, tmp_path):
    js = nc.jetstream()
    collector = await retraining_collector(js, tmp_path, threshold=3, kv=AddDuringSnapshot)
    for i in range(3):
        assert await collector.on_outcome(candidate(i)) == "added"
    collector.kv.add = lambda: collector.on_outcome(candidate(3))
    event = await collector.check("py")
    assert event is not None
    lines = await pooled(collector, event.extra_sources[0].path, tmp_path / "pool.jsonl")
    status = await collector.status("py")
    # The late candidate is either in this retrain or counted new for the next one, never both or neither.
    assert status["pool_size"] == 4 and len(lines) + status["new_since_last"] == 4, (len(lines), status)
    assert len(lines) == 4 and status["triggers"] == 1


async def test_concurrent_adds_and_checks_lose_and_repeat_nothing(nc, tmp_path):
    """Replicas adding and checking at once: every candidate lands in exactly one retrain's new entries,
    and there is exactly one train.requested per trigger."""
    js = nc.jetstream()
    replicas = [await retraining_collector(js, tmp_path, threshold=4) for _ in range(3)]
    n = 40

    async def add(i: int) -> None:
        await asyncio.sleep(0.01 * i)  # a trickle, so that checks run between adds and trigger several times
        assert await replicas[i % 3].on_outcome(candidate(i)) == "added"

    async def check_loop(c: Collector, stop: asyncio.Event) -> list:
        events = []
        while not stop.is_set():
            event = await c.check("py")
            if event is not None:
                events.append(event)
            await asyncio.sleep(0)
        return events

    stop = asyncio.Event()
    checkers = [asyncio.create_task(check_loop(c, stop)) for c in replicas]
    await asyncio.gather(*(add(i) for i in range(n)))
    while (await replicas[0].status("py"))["new_since_last"] >= 4:
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*checkers)
    requested = await read(js, "lorafleet.v1.train.requested")
    status = await replicas[0].status("py")
    assert len(requested) == status["triggers"] >= 2
    assert len({e["event_id"] for e in requested}) == len(requested)
    seen: set[str] = set()
    sizes = []
    for event in requested:
        problems = await pooled(replicas[0], event["extra_sources"][0]["path"], tmp_path / "pool.jsonl")
        assert seen <= problems  # each snapshot holds everything the earlier ones had
        assert len(problems - seen) >= 4  # and at least the threshold of new entries
        seen = problems
        sizes.append(len(problems))
    assert sizes == sorted(sizes) and len(seen) + status["new_since_last"] == n == status["pool_size"], (sizes, status)


async def test_a_full_pool_waits_for_the_open_ab_test(nc, tmp_path):
    """A retrain requested during v2's A/B test would replace that test before the traffic decided it:
    the collector waits, says why in its status, and fires once the test is decided."""
    js = nc.jetstream()
    collector = await retraining_collector(js, tmp_path, threshold=2)
    store = collector.registry
    settings = store.settings.model_copy(update={"ab_auto_start": True})
    config = TrainConfig(adapter_name="py", base_model="tiny").model_dump(mode="json")
    await store.apply("py", lambda s: core.register(s, evaluated(name="py", version=2), INFO, 2, NOW, settings, config))
    for i in range(3):
        assert await collector.on_outcome(candidate(i)) == "added"
    assert await collector.check("py") is None
    status = await collector.status("py")
    assert status["deferred_by_ab"] == 2 and status["new_since_last"] == 3 and status["triggers"] == 0
    assert await read(js, "lorafleet.v1.train.requested") == []
    await store.apply("py", lambda s: core.promote(s, "py", 2, NOW))
    assert (await collector.check("py")) is not None
    assert len(await read(js, "lorafleet.v1.train.requested")) == 1
    assert (await collector.status("py"))["deferred_by_ab"] is None


async def test_the_retrain_trace_links_to_the_run_that_trained_the_active_version(nc, tmp_path, span_exporter):
    from opentelemetry import trace

    from lorafleet.shared.telemetry.tracing import inject_headers, tracer

    js = nc.jetstream()
    settings = RegistrySettings(retrain_pool_threshold=1)
    store = await RegistryStore.open(js, settings)
    config = TrainConfig(adapter_name="py", base_model="tiny").model_dump(mode="json")
    with tracer().start_as_current_span("registry adapter.evaluated") as run_span:  # the first run's trace
        origin = inject_headers({})
        await store.apply("py", lambda s: core.register(s, evaluated(name="py"), INFO, 1, NOW, settings, config, origin))
    await store.apply("py", lambda s: core.promote(s, "py", 1, NOW))
    assert (await store.get("py"))[0].versions[1].trace_context == origin
    collector = await Collector.open(store, LocalArtifactStore(tmp_path / "art"), verify=None)
    assert await collector.on_outcome(candidate(0)) == "added"
    assert await collector.check("py") is not None
    [span] = [s for s in span_exporter.get_finished_spans() if s.name == "collector.retrain"]
    run_trace = run_span.get_span_context().trace_id
    assert span.context.trace_id != run_trace and [link.context.trace_id for link in span.links] == [run_trace]
    assert span.attributes["lorafleet.retrain_of"] == 1
    sub = await js.subscribe("lorafleet.v1.train.requested", ordered_consumer=True)
    msg = await sub.next_msg(timeout=5)
    # The train.requested carries the retrain span's context: the retrain's services continue that trace.
    assert msg.headers["traceparent"].split("-")[1] == trace.format_trace_id(span.context.trace_id)
