"""Reading the bus for the pages: events from the stream, registry entries, consumer state, reports.

Nothing is kept between requests except the NATS connection and unpacked evaluation
reports (a cache keyed by content hash); any number of replicas can run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import tempfile
from collections import deque
from pathlib import Path
from typing import Any

import nats
from nats.js import api
from nats.js.errors import NotFoundError

from lorafleet.services.registry.collector import retrain_status
from lorafleet.services.registry.settings import RegistrySettings
from lorafleet.services.registry.store import RegistryStore
from lorafleet.shared.bus import ADVISORY_STREAM, keep_reconnecting, quiet_error, resolve_servers
from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.events import DLQ_PREFIX, STREAM, SUBJECT_PREFIX
from lorafleet.shared.settings import Settings

from .settings import DashboardSettings
from .views import Rec

log = logging.getLogger("lorafleet.dashboard")
FETCH_BATCH = 1000


class BusUnavailable(Exception):
    """NATS can't be reached right now (the page says so and tries again)."""


class Reader:
    def __init__(self, settings: Settings, dash: DashboardSettings, registry: RegistrySettings | None = None) -> None:
        self.settings, self.dash = settings, dash
        self.registry_settings = registry or RegistrySettings()
        self.nc: nats.NATS | None = None
        self.js = None
        self.store: RegistryStore | None = None
        self.last_error: str | None = None
        self.subscribers: list = []  # callbacks re-attached on every (re)connect
        self.history: QueueHistory | None = None
        self._cache = Path(dash.cache_dir) if dash.cache_dir else Path(tempfile.mkdtemp(prefix="lorafleet-dashboard-"))
        self._own_cache = dash.cache_dir is None

    # ----------------------------------------------------------------- connection

    @property
    def servers(self) -> list[str]:
        try:
            return resolve_servers(self.settings)
        except LorafleetError:
            return []

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    async def keep_connected(self, stop: asyncio.Event) -> None:
        """Connect, and while NATS is unreachable keep trying; nats-py itself reconnects after that."""
        while not stop.is_set():
            if self.nc is None or self.nc.is_closed:
                try:
                    await self._connect()
                    self.last_error = None
                    log.info("connected to %s", ", ".join(self.servers))
                except Exception as exc:  # unreachable, no embedded server recorded yet, ...
                    self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                    self.nc = None
            try:
                await asyncio.wait_for(stop.wait(), self.dash.reconnect_s)
            except asyncio.TimeoutError:
                pass

    async def _connect(self) -> None:
        servers = self.servers
        if not servers:
            raise BusUnavailable("no NATS server configured and no embedded server running "
                                 "(set LORAFLEET_NATS_URL or start `lorafleet up`)")

        async def disconnected() -> None:
            self.last_error = "connection lost; reconnecting"

        # One attempt here (nats-py would retry a failing first connect forever, and the page could not say
        # why); keep_connected() calls again. Once connected, nats-py reconnects forever by itself.
        nc = await nats.connect(servers=servers, name="lorafleet-dashboard", connect_timeout=self.settings.connect_timeout_s,
                                max_reconnect_attempts=1, reconnect_time_wait=self.dash.reconnect_s,
                                allow_reconnect=True, error_cb=quiet_error, disconnected_cb=disconnected)
        keep_reconnecting(nc)
        self.nc, self.js = nc, nc.jetstream()
        self.store = RegistryStore(self.js, None, self.registry_settings, publish_timeout=self.settings.publish_timeout_s)
        for subject, cb in self.subscribers:
            await nc.subscribe(subject, cb=cb)

    async def subscribe(self, subject: str, cb) -> None:
        self.subscribers.append((subject, cb))
        if self.connected:
            await self.nc.subscribe(subject, cb=cb)

    def status(self) -> dict[str, Any]:
        return {"connected": self.connected, "servers": self.servers,
                "error": None if self.connected else (self.last_error or "connecting")}

    def require(self):
        if not self.connected:
            where = ", ".join(self.servers) or "no server configured"
            raise BusUnavailable(f"NATS is unreachable ({where}): {self.last_error or 'connecting'}")
        return self.js

    async def registry(self) -> RegistryStore:
        js = self.require()
        assert self.store is not None
        if self.store.kv is None:
            try:
                self.store.kv = await js.key_value(self.registry_settings.bucket)
            except Exception as exc:  # the bucket appears with the first registration
                raise NotFound("the registry has no bucket yet: nothing was registered") from exc
        return self.store

    async def close(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()
        if self._own_cache:
            shutil.rmtree(self._cache, ignore_errors=True)

    # ----------------------------------------------------------------- events

    async def events(self, types: list[str] | None = None, start_seq: int | None = None,
                     last_per_subject: bool = False, until_seq: int | None = None) -> list[Rec]:
        """Events of these types (all without), oldest first, from `start_seq` on (up to `until_seq`)."""
        js = self.require()
        subjects = [f"{SUBJECT_PREFIX}.{t}" for t in types] if types else [f"{SUBJECT_PREFIX}.>"]
        if start_seq:
            policy = api.DeliverPolicy.BY_START_SEQUENCE
        else:
            policy = api.DeliverPolicy.LAST_PER_SUBJECT if last_per_subject else api.DeliverPolicy.ALL
        config = api.ConsumerConfig(
            filter_subjects=subjects, ack_policy=api.AckPolicy.NONE, deliver_policy=policy,
            opt_start_seq=start_seq or None, inactive_threshold=10.0, mem_storage=True, num_replicas=1,
        )
        try:
            sub = await js.pull_subscribe("", stream=STREAM, config=config)
        except NotFoundError:
            return []
        out: list[Rec] = []
        try:
            pending = (await sub.consumer_info()).num_pending
            while pending > 0:
                msgs = await sub.fetch(min(FETCH_BATCH, pending), timeout=5)
                for msg in msgs:
                    if until_seq is not None and msg.metadata.sequence.stream > until_seq:
                        return out
                    try:
                        body = json.loads(msg.data)
                    except ValueError:
                        body = {"unparsable": msg.data[:200].decode(errors="replace")}
                    if isinstance(body, dict):
                        out.append(Rec(msg.metadata.sequence.stream, msg.subject.removeprefix(SUBJECT_PREFIX + "."), body))
                    pending = msg.metadata.num_pending
        finally:
            try:
                await js.delete_consumer(STREAM, sub._consumer)
            except Exception:
                pass  # inactive_threshold removes it anyway
            await sub.unsubscribe()
        return out

    async def message(self, seq: int) -> Rec | None:
        js = self.require()
        try:
            msg = await js.get_msg(STREAM, seq)
        except NotFoundError:
            return None
        try:
            body = json.loads(msg.data or b"")
        except ValueError:
            return None
        return Rec(seq, msg.subject.removeprefix(SUBJECT_PREFIX + "."), body) if isinstance(body, dict) else None

    # ----------------------------------------------------------------- state

    async def services(self) -> dict[str, Any]:
        js = self.require()
        try:
            info = await js.stream_info(STREAM)
        except NotFoundError:
            raise NotFound(f"NATS has no {STREAM} stream yet: start the services (`lorafleet up`)") from None
        dlq = (await js.stream_info(STREAM, subjects_filter=f"{DLQ_PREFIX}.>")).state.subjects or {}
        try:
            adv = (await js.stream_info(ADVISORY_STREAM, subjects_filter=">")).state.subjects or {}
        except NotFoundError:
            adv = {}
        consumers = [
            {"name": c.name, "pending": c.num_pending, "ack_pending": c.num_ack_pending, "redelivered": c.num_redelivered,
             "waiting_pulls": c.num_waiting}
            for c in await js.consumers_info(STREAM) if c.config.durable_name
        ]
        stream = {"name": STREAM, "messages": info.state.messages, "bytes": info.state.bytes,
                  "first_seq": info.state.first_seq, "last_seq": info.state.last_seq}
        return {"stream": stream, "consumers": consumers, "dlq_counts": dict(dlq), "advisories": dict(adv),
                "servers": self.servers}

    async def retrain(self, name: str) -> dict[str, Any] | None:
        try:
            return await retrain_status(await self.registry(), name)
        except Exception as exc:  # the pool bucket appears with the registry service
            log.debug("retrain status of %s: %s", name, exc)
            return None

    async def report(self, uri: str, sha256: str) -> Path | None:
        """The evaluation report directory, unpacked once per content hash."""
        from lorafleet.shared.artifacts import open_store

        dest = self._cache / sha256[:32]
        if (dest / "report.json").is_file():
            return dest
        js = self.require()
        tmp = self._cache / f".{sha256[:32]}.{id(asyncio.current_task())}"
        try:
            store = open_store(self.settings, js=js)
            await store.get_dir(uri, tmp)
            if dest.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.rename(dest)
        except Exception as exc:
            log.warning("evaluation report %s unavailable: %s", uri, exc)
            shutil.rmtree(tmp, ignore_errors=True)
            return None
        return dest


class QueueHistory:
    """The consumers' queue depths over the last minutes, sampled by this process.

    JetStream keeps no history of consumer state, so each dashboard process samples it while it
    runs (in memory only: a restarted replica starts an empty plot, nothing needs backing up)."""

    def __init__(self, interval_s: float = 5.0, keep_s: float = 600.0) -> None:
        self.interval_s = interval_s
        self.samples: deque[tuple[float, dict[str, tuple[int, int, int]]]] = deque(maxlen=int(keep_s / interval_s) + 1)

    def add(self, at: float, consumers: list[dict[str, Any]]) -> None:
        self.samples.append((at, {c["name"]: (c["pending"], c["ack_pending"], c["redelivered"]) for c in consumers}))

    def series(self) -> dict[str, Any]:
        names = sorted({n for _, row in self.samples for n in row})
        return {"t": [round(t, 1) for t, _ in self.samples],
                "services": {n: {key: [row[n][i] if n in row else None for _, row in self.samples]
                                 for i, key in enumerate(("pending", "ack_pending", "redelivered"))} for n in names}}

    async def run(self, reader: "Reader", stop: asyncio.Event) -> None:
        import time

        while not stop.is_set():
            if reader.connected:
                try:
                    self.add(time.time(), (await reader.services())["consumers"])
                except Exception as exc:  # no stream yet, a reconnect in progress: the next sample will do
                    log.debug("queue sample skipped: %s", exc)
            try:
                await asyncio.wait_for(stop.wait(), self.interval_s)
            except asyncio.TimeoutError:
                pass


class NotFound(Exception):
    """Something the page names does not exist (404)."""
