"""The collector: successful, confident production outcomes become training candidates,
and a schedule or the pool's growth triggers exactly one retrain per period.

Pure parts: `select` (which outcomes qualify, as a `Problem`), `pool_key`
(dedup), `retrain_decision` (is a retrain due, which period). I/O parts:
`Collector` keeps the pool in a KV bucket (`pool.<adapter>.<problem>.<solution>`
→ Problem JSON; `create()` makes additions idempotent) and the trigger state
under `trigger.<adapter>` (compare-and-set; the train.requested rides in its
outbox, Nats-Msg-Id derived from the period).

Pool format (docs/ARCHITECTURE.md): a JSONL artifact of `Problem` lines,
source="production", solutions=[code], tests when the outcome had them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Awaitable, Callable

import nats.js.errors
from croniter import croniter
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lorafleet.shared.bus import publish_event
from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.events import ProductionOutcome, SourceSpec, TrainRequested, derive_id
from lorafleet.shared.problems import Limits, Problem, TestCase
from lorafleet.shared.telemetry.tracing import linked_span

from .core import check_name
from .model import AdapterState, OutboxItem, Version
from .settings import RegistrySettings
from .store import RegistryStore, cas_update, now, open_bucket

log = logging.getLogger(__name__)

Verify = Callable[[str, list[TestCase], Limits], Awaitable[tuple[bool, str]]]


# --------------------------------------------------------------------------- pure


def normalize_code(code: str) -> str:
    return "\n".join(line.rstrip() for line in code.strip().splitlines() if line.strip())


def normalize_text(text: str) -> str:
    return " ".join(text.split())


def pool_key(adapter_name: str, problem: str, solution: str) -> str:
    p = hashlib.sha256(normalize_text(problem).encode()).hexdigest()[:20]
    s = hashlib.sha256(normalize_code(solution).encode()).hexdigest()[:20]
    return f"pool.{adapter_name}.{p}.{s}"


def select(o: ProductionOutcome, settings: RegistrySettings) -> tuple[Problem | None, str]:
    """The training candidate in an outcome, or None and why not."""
    if not o.success:
        return None, "not successful"
    if o.confidence <= settings.min_confidence:
        return None, f"confidence {o.confidence} <= {settings.min_confidence}"
    if not (o.problem and o.problem.strip()) or not (o.solution and o.solution.strip()):
        return None, "no problem statement or no solution attached"
    try:
        tests = [TestCase.model_validate(t) for t in (o.tests or [])]
    except ValidationError as exc:
        return None, f"attached tests are not valid TestCases: {exc.errors()[0]['msg']}"
    if settings.require_tests and not tests:
        return None, "no tests attached (require_tests is on)"
    key = pool_key(o.adapter_name, o.problem, o.solution)
    problem = Problem(
        id=f"production/{key.split('.', 2)[2]}", source="production", statement=o.problem, tests=tests,
        solutions=[o.solution],
        meta={"adapter_name": o.adapter_name, "version": o.version, "event_id": o.event_id,
              "request_key": o.request_key, "confidence": o.confidence, "verified": False,
              "collected_at": o.occurred_at.isoformat()},
    )
    return problem, "ok"


class RetrainState(BaseModel):
    model_config = ConfigDict(extra="forbid")
    adapter_name: str
    schedule_anchor: datetime = Field(description="the last scheduled tick handled (fired or skipped)")
    last_period: str | None = None
    last_trigger_at: datetime | None = None
    last_trigger_kind: str | None = None
    last_pool_seq: int = Field(0, description="pool bucket sequence at the last trigger: later entries are new")
    last_request_id: str | None = None
    last_skip: str | None = None
    triggers: int = 0
    outbox: list[OutboxItem] = Field(default_factory=list)


@dataclass(frozen=True)
class PoolSnapshot:
    lines: int
    new: int  # entries above the last trigger's sequence
    newest_seq: int  # every pool entry at or below this sequence is in the snapshot, none above it


@dataclass(frozen=True)
class RetrainDecision:
    period: str | None  # None: no retrain now
    kind: str = ""
    anchor: datetime | None = None  # move the schedule anchor here
    reason: str = ""


def next_scheduled(schedule: str, after: datetime) -> datetime:
    return croniter(schedule, after).get_next(datetime)


def retrain_decision(state: RetrainState, current: datetime, new_entries: int, settings: RegistrySettings,
                     ab_candidate: int | None = None) -> RetrainDecision:
    """ab_candidate: the version under an open A/B test, if any. A retrain then waits (the schedule's
    anchor stays, so a due tick fires after the decision): its adapter would replace the candidate's
    test before the traffic decided it, and part of its pool is the candidate's own answers."""
    if ab_candidate is not None and not settings.retrain_during_ab:
        return RetrainDecision(period=None, reason=f"deferred: the A/B test of v{ab_candidate} is still open")
    if next_scheduled(settings.retrain_schedule, state.schedule_anchor) <= current:
        tick = croniter(settings.retrain_schedule, current).get_prev(datetime)  # missed ticks collapse into one
        if new_entries >= max(settings.retrain_min_new, 1):
            return RetrainDecision(period=f"schedule:{tick.isoformat()}", kind="schedule", anchor=tick,
                                   reason=f"scheduled ({settings.retrain_schedule}); {new_entries} new pool entries")
        return RetrainDecision(period=None, anchor=tick,
                               reason=f"scheduled retrain at {tick.isoformat()} skipped: {new_entries} new pool entries")
    if new_entries >= settings.retrain_pool_threshold:
        return RetrainDecision(period=f"pool:{state.last_pool_seq}", kind="pool_size",
                               reason=f"{new_entries} new pool entries >= threshold {settings.retrain_pool_threshold}")
    return RetrainDecision(period=None)


def open_ab(adapter: AdapterState | None) -> int | None:
    """The candidate version of the adapter's open A/B test, if one is open."""
    return adapter.ab.candidate if adapter is not None and adapter.ab is not None else None


def active_version(adapter: AdapterState | None) -> Version | None:
    return adapter.versions[adapter.active] if adapter is not None and adapter.active is not None else None


def retrain_event(adapter_name: str, period: str, config: dict[str, Any], config_sha256: str, pool_uri: str) -> TrainRequested:
    event_id = derive_id("retrain", adapter_name, period)
    return TrainRequested(event_id=event_id, request_id=event_id, adapter_name=adapter_name, config=config,
                          config_sha256=config_sha256, reason="retrain",
                          extra_sources=[SourceSpec(type="production", path=pool_uri)])


# --------------------------------------------------------------------------- I/O


class Collector:
    def __init__(self, registry: RegistryStore, pool_kv, artifacts, verify: Verify | None) -> None:
        self.registry = registry
        self.js = registry.js
        self.kv = pool_kv
        self.settings = registry.settings
        self.artifacts = artifacts
        self.verify = verify
        self.stream = f"KV_{self.settings.pool_bucket}"
        self._said: dict[str, str] = {}  # adapter -> the last reason logged for not retraining

    @classmethod
    async def open(cls, registry: RegistryStore, artifacts, verify: Verify | None, replicas: int = 1) -> "Collector":
        kv = await open_bucket(registry.js, registry.settings.pool_bucket, history=1, replicas=replicas)
        return cls(registry, kv, artifacts, verify)

    async def on_outcome(self, o: ProductionOutcome) -> str:
        """Add the outcome's solution to the pool if it qualifies; returns what happened (for logs and tests)."""
        problem, why = select(o, self.settings)
        if problem is None:
            return f"skipped: {why}"
        state, _ = await self.registry.get(o.adapter_name)
        if state is None:
            return f"skipped: unknown adapter {o.adapter_name!r}"
        key = pool_key(o.adapter_name, o.problem or "", o.solution or "")
        try:
            await self.kv.get(key)
            return "duplicate"
        except nats.js.errors.KeyNotFoundError:
            pass
        problem_prefix = key.rsplit(".", 1)[0]
        if await self._count(f"{problem_prefix}.>") >= self.settings.max_solutions_per_problem:
            return f"skipped: problem already has {self.settings.max_solutions_per_problem} solutions in the pool"
        if problem.tests:
            if self.verify is None:
                return "skipped: no sandbox to re-verify the attached tests"
            ok, detail = await self.verify(problem.solutions[0], problem.tests, problem.limits)
            if not ok:
                return f"rejected: sandbox re-verification failed ({detail})"
            problem.meta["verified"] = True
        try:
            await self.kv.create(key, problem.model_dump_json().encode())
        except nats.js.errors.KeyWrongLastSequenceError:
            return "duplicate"
        return "added"

    async def _count(self, key_filter: str, after_seq: int = 0) -> int:
        """Entries matching `key_filter` with a bucket sequence above `after_seq`, counted by the server."""
        config = ConsumerConfig(
            filter_subject=f"$KV.{self.settings.pool_bucket}.{key_filter}", ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if after_seq else DeliverPolicy.ALL,
            opt_start_seq=after_seq + 1 if after_seq else None, inactive_threshold=30.0, mem_storage=True,
        )
        info = await self.js.add_consumer(self.stream, config=config)
        try:
            return info.num_pending
        finally:
            try:
                await self.js.delete_consumer(self.stream, info.name)
            except nats.js.errors.NotFoundError:
                pass

    async def pool_size(self, adapter_name: str, after_seq: int = 0) -> int:
        return await self._count(f"pool.{check_name(adapter_name)}.>", after_seq)

    async def snapshot(self, adapter_name: str, dest: Path, after_seq: int = 0) -> PoolSnapshot:
        """Write the adapter's whole pool as Problem JSONL, in bucket order.

        The snapshot is every pool entry up to its newest revision, so that revision is an exact
        watermark: the retrain decision, the artifact and the next period's "new entries" all
        come from this one read."""
        lines = new = newest = 0
        if await self._count(f"pool.{check_name(adapter_name)}.>") == 0:
            dest.write_text("")
            return PoolSnapshot(lines=0, new=0, newest_seq=after_seq)
        watcher = await self.kv.watch(f"pool.{adapter_name}.>", ignore_deletes=True)
        try:
            with open(dest, "w") as fh:
                while True:
                    # nats-py's "initial values done" marker (None) races its own delivery and can come
                    # before the entries (seen under load: a snapshot of 0 entries), so the end is the
                    # entry the server says has nothing pending after it.
                    entry = await watcher.updates(timeout=30)
                    if entry is None:
                        continue
                    fh.write(entry.value.decode().strip() + "\n")
                    lines += 1
                    new += entry.revision > after_seq
                    newest = max(newest, entry.revision)
                    if entry.delta == 0:
                        break
        finally:
            await watcher.stop()
        return PoolSnapshot(lines=lines, new=new, newest_seq=max(newest, after_seq))

    async def _get_state(self, name: str) -> RetrainState:
        key = f"trigger.{name}"
        try:
            return RetrainState.model_validate_json((await self.kv.get(key)).value)
        except nats.js.errors.KeyNotFoundError:
            initial = RetrainState(adapter_name=name, schedule_anchor=now()).model_dump_json().encode()
            try:
                await self.kv.create(key, initial)
            except nats.js.errors.KeyWrongLastSequenceError:
                pass
            return RetrainState.model_validate_json((await self.kv.get(key)).value)

    async def retrain_config(self, adapter_name: str) -> tuple[dict[str, Any], str]:
        from lorafleet.shared.config import load_config, parse_config

        path = self.settings.retrain_configs.get(adapter_name)
        if path is not None:
            config = load_config(path)
        else:
            active = active_version((await self.registry.get(adapter_name))[0])
            if active is None or active.train_config is None:
                raise LorafleetError(
                    f"no training config for retraining {adapter_name}: the active version doesn't carry one; set "
                    f'LORAFLEET_REGISTRY_RETRAIN_CONFIGS=\'{{"{adapter_name}": "configs/<file>.yaml"}}\''
                )
            config = parse_config(active.train_config, f"{adapter_name} v{active.version} training config")
        return config.model_dump(mode="json"), config.sha256()

    async def check(self, adapter_name: str, current: datetime | None = None) -> TrainRequested | None:
        """Trigger a retrain of `adapter_name` if one is due; returns the published train.requested."""
        current = current or now()
        state = await self._get_state(adapter_name)
        if state.outbox:
            return await self._flush(adapter_name)
        new = await self.pool_size(adapter_name, state.last_pool_seq)
        adapter, _ = await self.registry.get(adapter_name)
        ab_candidate = open_ab(adapter)
        decision = retrain_decision(state, current, new, self.settings, ab_candidate)
        if decision.period is None and decision.anchor is None:
            if decision.reason and self._said.get(adapter_name) != decision.reason:  # once, not every check
                self._said[adapter_name] = decision.reason
                log.info("retrain check of %s: %s", adapter_name, decision.reason)
            return None
        event = None
        pool_seq = state.last_pool_seq
        if decision.period is not None:
            if decision.period == state.last_period:
                return None
            config, sha = await self.retrain_config(adapter_name)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "pool.jsonl"
                snap = await self.snapshot(adapter_name, path, state.last_pool_seq)
                # Decide again on what the snapshot holds: the count above is only a cheap pre-check.
                decision = retrain_decision(state, current, snap.new, self.settings, ab_candidate)
                if decision.period is None:
                    log.warning("retrain check of %s: the pool snapshot has %d new entries, %d counted before; "
                                "looking again next round", adapter_name, snap.new, new)
                    return None
                pool_seq = snap.newest_seq
                # Unique per attempt: replicas racing for one period each upload; only the CAS winner's is used.
                name = f"{hashlib.sha256(decision.period.encode()).hexdigest()[:16]}-{uuid.uuid4().hex[:8]}"
                ref = await self.artifacts.put_file(path, f"production-pool/{adapter_name}/{name}.jsonl")
            event = retrain_event(adapter_name, decision.period, config, sha, ref.uri)
            log.info("retrain of %s requested (%s): pool of %d problems up to sequence %d at %s",
                     adapter_name, decision.reason, snap.lines, pool_seq, ref.uri)

        def fn(raw: bytes | None) -> bytes | None:
            s = RetrainState.model_validate_json(raw) if raw else RetrainState(adapter_name=adapter_name, schedule_anchor=current)
            if s.model_dump() != state.model_dump():
                return None  # someone else moved first: their decision stands, look again next round
            if decision.anchor is not None:
                s.schedule_anchor = decision.anchor
            if event is None:
                s.last_skip = decision.reason
            else:
                s.last_period, s.last_trigger_at, s.last_trigger_kind = decision.period, current, decision.kind
                s.last_pool_seq, s.last_request_id, s.triggers = pool_seq, event.request_id, s.triggers + 1
                s.outbox = [OutboxItem(event_type=event.event_type, data=event.model_dump(mode="json"))]
            return s.model_dump_json().encode()

        written = await cas_update(self.kv, f"trigger.{adapter_name}", fn, self.settings.cas_retries)
        if not written or event is None:
            return None
        active = active_version(adapter)
        # The retrain's trace starts here and links to the run that trained the active version.
        with linked_span("collector.retrain", active.trace_context if active else None, {
                "lorafleet.adapter": adapter_name, "lorafleet.request_id": event.request_id,
                "lorafleet.retrain_of": active.version if active else 0, "lorafleet.reason": decision.reason}):
            return await self._flush(adapter_name)

    async def _flush(self, adapter_name: str) -> TrainRequested | None:
        state = await self._get_state(adapter_name)
        if not state.outbox:
            return None
        event = state.outbox[0].event()
        await publish_event(self.js, event)
        ids = {i.data["event_id"] for i in state.outbox}

        def drop(raw: bytes | None) -> bytes | None:
            s = RetrainState.model_validate_json(raw)
            if not s.outbox:
                return None
            s.outbox = [i for i in s.outbox if i.data["event_id"] not in ids]
            return s.model_dump_json().encode()

        await cas_update(self.kv, f"trigger.{adapter_name}", drop, self.settings.cas_retries)
        return event  # type: ignore[return-value]

    async def check_all(self, current: datetime | None = None) -> list[TrainRequested]:
        out = []
        for name in await self.registry.names():
            try:
                event = await self.check(name, current)
            except LorafleetError as exc:
                log.error("retrain check of %s: %s", name, exc)
                continue
            if event is not None:
                out.append(event)
        return out

    async def run_schedule(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.check_all()
            except Exception:
                log.exception("retrain check failed; trying again in %.0fs", self.settings.retrain_check_interval_s)
            try:
                await asyncio.wait_for(stop.wait(), self.settings.retrain_check_interval_s)
            except asyncio.TimeoutError:
                pass

    async def status(self, adapter_name: str) -> dict[str, Any]:
        state = await self._get_state(adapter_name)
        return {
            "adapter_name": adapter_name,
            "pool_size": await self.pool_size(adapter_name),
            "new_since_last": await self.pool_size(adapter_name, state.last_pool_seq),
            "threshold": self.settings.retrain_pool_threshold,
            "schedule": self.settings.retrain_schedule,
            "next_scheduled": next_scheduled(self.settings.retrain_schedule, max(state.schedule_anchor, now())).isoformat(),
            "last_trigger": state.last_trigger_at.isoformat() if state.last_trigger_at else None,
            "last_trigger_kind": state.last_trigger_kind,
            "last_request_id": state.last_request_id,
            "last_skip": state.last_skip,
            "deferred_by_ab": None if self.settings.retrain_during_ab else open_ab((await self.registry.get(adapter_name))[0]),
            "triggers": state.triggers,
        }


async def retrain_status(store: RegistryStore, adapter_name: str) -> dict[str, Any]:
    collector = await Collector.open(store, artifacts=None, verify=None)
    return await collector.status(adapter_name)
