"""Outcomes on their way to JetStream: publish with Nats-Msg-Id = request id, spool on failure.

`Spool` is a bounded directory of one JSON file per outcome (temp name, fsync, rename),
so a crash or a NATS outage loses nothing that was accepted. `OutcomePublisher` tries
the bus first; what doesn't get JetStream's ack goes to the spool, and a background
task re-publishes the spool until every file is acknowledged, deleting a file only
then. A publish that reached the server before its ack was lost is re-sent with the
same id and JetStream's duplicate window drops it: the outcome is recorded once.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from lorafleet.shared.bus import publish_event
from lorafleet.shared.events import ProductionOutcome

from .core import spool_admit, spool_name

log = logging.getLogger(__name__)
SUFFIX = ".json"


class Spool:
    def __init__(self, directory: Path, max_entries: int) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = None
        self.max_entries = max_entries
        for stale in self.dir.glob(".*.tmp"):  # a write cut short by a crash: never acknowledged to anyone
            stale.unlink(missing_ok=True)
        self._names = {p.name for p in self.dir.glob(f"*{SUFFIX}")}
        self.dropped = 0

    @classmethod
    def claim(cls, root: Path, max_entries: int) -> "Spool":
        """The first of root/0, root/1, ... that no other live process holds (flock): replicas sharing a
        data directory never share a spool, and a restarted one takes over what a dead one left."""
        import fcntl

        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        for i in range(1024):
            lock = open(root / f"{i}.lock", "w")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            spool = cls(root / str(i), max_entries)
            spool._lock = lock  # held for the life of the process
            return spool
        raise RuntimeError(f"no free spool under {root}: 1024 gateway processes hold one")

    def __len__(self) -> int:
        return len(self._names)

    def put(self, event: ProductionOutcome) -> bool:
        """Keep the outcome on disk; False (and counted) when the spool is full."""
        name = spool_name(event.event_id)
        decision = spool_admit(self._names, name, self.max_entries)
        if decision == "have":
            return True
        if decision == "full":
            self.dropped += 1
            log.error("outcome spool %s is full (%d outcomes): dropping outcome %s; raise LORAFLEET_GATEWAY_SPOOL_MAX "
                      "or bring NATS back", self.dir, self.max_entries, event.event_id)
            return False
        tmp = self.dir / f".{name}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(event.to_bytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.dir / name)
        self._names.add(name)
        return True

    def names(self) -> list[str]:
        return sorted(self._names, key=lambda n: _mtime(self.dir / n))

    def load(self, name: str) -> ProductionOutcome | None:
        try:
            return ProductionOutcome.model_validate_json((self.dir / name).read_bytes())
        except FileNotFoundError:
            self._names.discard(name)
            return None
        except ValueError as exc:  # not ours or damaged: keep it aside for a human, never retry it forever
            log.error("spooled outcome %s does not parse (%s): moved to %s.bad", name, exc, name)
            os.replace(self.dir / name, self.dir / f"{name}.bad")
            self._names.discard(name)
            return None

    def remove(self, name: str) -> None:
        (self.dir / name).unlink(missing_ok=True)
        self._names.discard(name)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


class OutcomePublisher:
    def __init__(self, nc, js, spool: Spool, timeout: float) -> None:
        self.nc = nc
        self.js = js
        self.spool = spool
        self.timeout = timeout
        self.published = 0
        self.spooled = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> "OutcomePublisher":
        self._task = asyncio.create_task(self._drain_forever())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def publish(self, event: ProductionOutcome) -> None:
        """Publish now if the bus answers; otherwise spool it (never raises for a bus problem)."""
        try:
            event.to_bytes()
        except ValueError as exc:
            log.error("outcome %s not published: %s", event.event_id, exc)
            return
        if len(self.spool) == 0 and self.nc.is_connected:
            try:
                await publish_event(self.js, event, timeout=self.timeout)
                self.published += 1
                return
            except Exception as exc:  # timeout, no responders, connection lost: all mean "try later"
                log.info("outcome %s not acknowledged (%s): spooled", event.event_id, type(exc).__name__)
        if self.spool.put(event):
            self.spooled += 1
        self._wake.set()

    async def drain(self) -> int:
        """Publish what the spool holds, oldest first; stops at the first failure. Returns how many went out."""
        sent = 0
        for name in self.spool.names():
            event = self.spool.load(name)
            if event is None:
                continue
            await publish_event(self.js, event, timeout=self.timeout)
            self.spool.remove(name)
            self.published += 1
            sent += 1
        return sent

    async def _drain_forever(self) -> None:
        delay = 0.5
        while True:
            if len(self.spool) == 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), 5.0)
                except asyncio.TimeoutError:
                    continue
            if not self.nc.is_connected:
                await asyncio.sleep(0.2)
                continue
            try:
                sent = await self.drain()
                if sent:
                    log.info("published %d spooled outcome(s); %d left", sent, len(self.spool))
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("spool drain paused (%s: %s); %d outcome(s) waiting", type(exc).__name__, exc, len(self.spool))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
