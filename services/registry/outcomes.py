"""Counting production.outcome events into the registry, exactly once, in batches.

One ordered consumer reads the outcome subject in stream order from the saved
cursor. A batch is grouped by adapter and applied with one compare-and-set per
adapter; each entry remembers the highest stream sequence it has counted
(`outcome_seq`), so a batch that is re-read after a crash, or read by another
replica at the same time, only counts what the entry hasn't seen. The cursor
(where to resume) moves after the entries are written. Replicas all read every
outcome; the compare-and-set decides which write lands, the sequence check
makes the rest no-ops.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from nats.js.api import ConsumerConfig, DeliverPolicy

from lorafleet.shared.bus import dlq_subject
from lorafleet.shared.dead_letters import make_dead_letter
from lorafleet.shared.events import STREAM, ProductionOutcome, parse_event, subject_for
from lorafleet.shared.telemetry import metrics

from .core import Outcome, RegistryError, apply_outcomes, check_name
from .store import RegistryStore, now


log = logging.getLogger(__name__)
OUTCOME_SUBJECT = subject_for(ProductionOutcome.event_type)


class OutcomeRecorder:
    def __init__(self, store: RegistryStore, service: str = "registry") -> None:
        self.store = store
        self.settings = store.settings
        self.service = service
        self.queue: asyncio.Queue = asyncio.Queue()
        self.last_seq = 0  # highest stream sequence handled by this process
        self.counted = 0
        self.dead_lettered = 0
        self._sub = None
        self._task: asyncio.Task | None = None
        self._progress = asyncio.Condition()

    async def start(self) -> "OutcomeRecorder":
        cursor = await self.store.cursor()
        self.last_seq = cursor
        config = (ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=cursor + 1)
                  if cursor else ConsumerConfig(deliver_policy=DeliverPolicy.ALL))
        self._sub = await self.store.js.subscribe(OUTCOME_SUBJECT, stream=STREAM, ordered_consumer=True,
                                                  config=config, cb=self._on_msg)
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
        if self._task is not None:
            # Cancel until it's done: on Python < 3.12, asyncio.wait_for (inside nats-py's request, under the
            # KV and publish calls) drops a cancellation that lands as its inner future completes, and the
            # task would then wait for the next outcome forever.
            while not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=1.0)

    async def _on_msg(self, msg) -> None:
        self.queue.put_nowait(msg)

    async def _next_batch(self) -> list:
        batch = [await self.queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.outcome_linger_ms / 1000
        while len(batch) < self.settings.outcome_batch:
            try:
                batch.append(self.queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            while True:
                try:
                    await self.apply(batch)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception:  # KV/server trouble: the same batch again, nothing is counted twice
                    log.exception("recording %d outcomes failed; retrying", len(batch))
                    await asyncio.sleep(1.0)

    async def apply(self, msgs: list) -> None:
        groups: dict[str, list[Outcome]] = defaultdict(list)
        by_seq = {}
        for msg in msgs:
            seq = msg.metadata.sequence.stream
            by_seq[seq] = msg
            try:
                event = parse_event(msg.subject, msg.data)
                assert isinstance(event, ProductionOutcome)
                check_name(event.adapter_name)
            except (ValueError, AssertionError, RegistryError) as exc:
                await self._dead_letter(msg, "invalid", str(exc))
                continue
            groups[event.adapter_name].append(Outcome(seq=seq, version=event.version, success=event.success,
                                                      latency_ms=event.latency_ms, error=event.error))
        for name, items in groups.items():
            change = await self.store.update(
                name, lambda state, name=name, items=items: apply_outcomes(state, name, items, self.settings, now()))
            if change.state is not None:
                self.counted += len(items) - len(change.dead)
                count_outcomes(self.service, name, change.state, items, {seq for seq, _ in change.dead})
            for seq, reason in change.dead:
                await self._dead_letter(by_seq[seq], "rejected", reason)
            if change.events:
                await self.store.flush(name, change.state)
        last = max(by_seq)
        await self.store.advance_cursor(last)
        async with self._progress:
            self.last_seq = max(self.last_seq, last)
            self._progress.notify_all()

    async def _dead_letter(self, msg, reason: str, error: str) -> None:
        letter = make_dead_letter(self.service, msg, reason, error)
        log.warning("outcome at stream seq %s dead-lettered: %s", letter.stream_seq, error)
        # Same id scheme as the bus runner: one dead letter per stream message, however many replicas see it.
        await self.store.js.publish(dlq_subject(self.service), letter.model_dump_json().encode(), stream=STREAM,
                                    headers={"Nats-Msg-Id": f"dlq:{self.service}:{letter.stream_seq}",
                                             "Lorafleet-Dlq-Reason": reason})
        self.dead_lettered += 1

    async def wait_for(self, seq: int, timeout: float = 30.0) -> None:
        """Until this process has handled the stream up to `seq` (tests, benchmark, CLI)."""
        async def reached() -> None:
            async with self._progress:
                await self._progress.wait_for(lambda: self.last_seq >= seq)
        await asyncio.wait_for(reached(), timeout)


def count_outcomes(service: str, name: str, state, items: list[Outcome], dead: set[int]) -> None:
    """Prometheus counters of the outcomes just counted, by version and arm (bounded labels)."""
    ab = state.ab
    for o in items:
        if o.seq in dead:
            continue
        arm = ("candidate" if o.version == ab.candidate else "control") if ab is not None else "active"
        metrics.REGISTRY_OUTCOMES.labels(service, name, str(o.version), arm, "true" if o.success else "false").inc()
    metrics.REGISTRY_AB_STATE.labels(service, name).set(1 if ab is not None else 0)
