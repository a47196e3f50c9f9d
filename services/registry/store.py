"""The registry's JetStream KV store: compare-and-set updates with retry, the
lora_int_id counter, and the outbox publisher.

Keys: `adapter.<name>` → AdapterState JSON; `meta.lora_int_id` → the last id
handed out; `meta.outcome_cursor` → the last production.outcome stream sequence
fully applied (where the outcome recorder resumes).
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import datetime, timezone
from typing import Callable

import nats.js.errors
from nats.js.api import KeyValueConfig, StorageType

from lorafleet.shared.bus import publish_event
from lorafleet.shared.errors import RetriableError
from lorafleet.shared.events import Event

from .core import Change, check_name, drop_outbox
from .model import AdapterState
from .routing import KEY_PREFIX
from .settings import RegistrySettings

log = logging.getLogger(__name__)
LORA_ID_KEY = "meta.lora_int_id"
CURSOR_KEY = "meta.outcome_cursor"


def now() -> datetime:
    return datetime.now(timezone.utc)


async def open_bucket(js, bucket: str, history: int = 1, replicas: int = 1):
    """The KV bucket, created on first use (same config from every process: creating twice is a no-op)."""
    try:
        return await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        return await js.create_key_value(KeyValueConfig(
            bucket=bucket, history=history, replicas=replicas, storage=StorageType.FILE,
        ))


async def cas_update(kv, key: str, fn: Callable[[bytes | None], bytes | None], retries: int) -> bool:
    """Compare-and-set `key` to fn(current value); fn returns None for "no change". True if written."""
    for attempt in range(retries):
        try:
            entry = await kv.get(key)
            value, revision = entry.value, entry.revision
        except nats.js.errors.KeyNotFoundError:
            value, revision = None, 0
        new = fn(value)
        if new is None:
            return False
        try:
            if revision:
                await kv.update(key, new, last=revision)
            else:
                await kv.create(key, new)
            return True
        except nats.js.errors.KeyWrongLastSequenceError:
            await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * 2**min(attempt, 6))))
    raise RetriableError(f"KV key {key!r}: {retries} compare-and-set attempts lost to other writers")


class RegistryStore:
    def __init__(self, js, kv, settings: RegistrySettings, publish_timeout: float = 5.0) -> None:
        self.js = js
        self.kv = kv
        self.settings = settings
        self.publish_timeout = publish_timeout
        self.conflicts = 0  # lost compare-and-sets (retried), for the benchmark and status

    @classmethod
    async def open(cls, js, settings: RegistrySettings | None = None, replicas: int = 1, publish_timeout: float = 5.0):
        settings = settings or RegistrySettings()
        kv = await open_bucket(js, settings.bucket, history=settings.history, replicas=replicas)
        return cls(js, kv, settings, publish_timeout)

    # ------------------------------------------------------------------ reads

    async def get(self, name: str) -> tuple[AdapterState | None, int]:
        try:
            entry = await self.kv.get(KEY_PREFIX + check_name(name))
        except nats.js.errors.KeyNotFoundError:
            return None, 0
        return AdapterState.model_validate_json(entry.value), entry.revision

    async def names(self) -> list[str]:
        # The server's own list of the bucket's subjects, not nats-py's kv.keys(): that one stops at its
        # "initial values done" marker, which can race ahead of the entries under load and miss some.
        prefix = f"$KV.{self.settings.bucket}.{KEY_PREFIX}"
        info = await self.js.stream_info(f"KV_{self.settings.bucket}", subjects_filter=prefix + ">")
        return sorted(subject[len(prefix):] for subject in (info.state.subjects or {}))

    async def all(self) -> list[AdapterState]:
        states = [(await self.get(name))[0] for name in await self.names()]
        return [s for s in states if s is not None]

    # ------------------------------------------------------------------ writes

    async def update(self, name: str, fn: Callable[[AdapterState | None], Change]) -> Change:
        """Read, apply `fn`, compare-and-set on the revision read; on a lost race re-read and re-apply."""
        key = KEY_PREFIX + check_name(name)
        for attempt in range(self.settings.cas_retries):
            state, revision = await self.get(name)
            change = fn(state)
            if change.state is None:
                return change
            data = change.state.model_dump_json().encode()
            try:
                if revision:
                    await self.kv.update(key, data, last=revision)
                else:
                    await self.kv.create(key, data)
                return change
            except nats.js.errors.KeyWrongLastSequenceError:
                self.conflicts += 1
                await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * 2**min(attempt, 6))))
        raise RetriableError(f"registry entry {name!r}: {self.settings.cas_retries} compare-and-set attempts lost to other writers")

    async def next_lora_int_id(self) -> int:
        """A new id from the CAS counter: unique across processes, never handed out twice (gaps are fine)."""
        for attempt in range(self.settings.cas_retries):
            try:
                entry = await self.kv.get(LORA_ID_KEY)
                current, revision = int(entry.value), entry.revision
            except nats.js.errors.KeyNotFoundError:
                current, revision = 0, 0
            try:
                if revision:
                    await self.kv.update(LORA_ID_KEY, str(current + 1).encode(), last=revision)
                else:
                    await self.kv.create(LORA_ID_KEY, str(current + 1).encode())
                return current + 1
            except nats.js.errors.KeyWrongLastSequenceError:
                self.conflicts += 1
                await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * 2**min(attempt, 6))))
        raise RetriableError(f"lora_int_id counter: {self.settings.cas_retries} compare-and-set attempts lost")

    async def cursor(self) -> int:
        try:
            return int((await self.kv.get(CURSOR_KEY)).value)
        except nats.js.errors.KeyNotFoundError:
            return 0

    async def advance_cursor(self, seq: int) -> None:
        """Move the outcome cursor forward to `seq` (never back)."""
        for _ in range(self.settings.cas_retries):
            try:
                entry = await self.kv.get(CURSOR_KEY)
                current, revision = int(entry.value), entry.revision
            except nats.js.errors.KeyNotFoundError:
                current, revision = 0, 0
            if current >= seq:
                return
            try:
                if revision:
                    await self.kv.update(CURSOR_KEY, str(seq).encode(), last=revision)
                else:
                    await self.kv.create(CURSOR_KEY, str(seq).encode())
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                await asyncio.sleep(random.uniform(0, 0.01))

    # ------------------------------------------------------------------ events

    async def flush(self, name: str, state: AdapterState | None = None) -> list[Event]:
        """Publish the entry's pending events (Nats-Msg-Id = event_id), then drop them from the outbox."""
        if state is None:
            state, _ = await self.get(name)
        if state is None or not state.outbox:
            return []
        events = [item.event() for item in state.outbox]
        for event in events:
            await publish_event(self.js, event, timeout=self.publish_timeout)
        ids = {e.event_id for e in events}
        await self.update(name, lambda s: drop_outbox(s, ids))
        return events

    async def flush_all(self) -> int:
        """Startup sweep: publish what a crashed process left in any outbox."""
        count = 0
        for state in await self.all():
            count += len(await self.flush(state.name, state))
        return count

    async def apply(self, name: str, fn: Callable[[AdapterState | None], Change]) -> Change:
        """update + publish the change's events."""
        change = await self.update(name, fn)
        if change.events:
            await self.flush(name, change.state)
        return change

