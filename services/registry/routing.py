"""Which version serves a request: deterministic hash routing over a cached route table.

`route_table(state)` (pure) turns an adapter's state into the arms to serve;
`pick(table, request_key)` hashes the key with the A/B test's salt into [0, 1):
below `traffic` → candidate, else the active version (or the base model when
nothing is active yet). The same key always lands on the same arm for one test.

`Router` keeps every table in memory, refreshed by a KV watch, and answers
request-reply on ROUTE_SUBJECT.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from lorafleet.shared.events import ROUTE_SUBJECT
from lorafleet.shared.telemetry import metrics

from .core import RegistryError
from .model import BASE_VERSION, AdapterState

log = logging.getLogger(__name__)
KEY_PREFIX = "adapter."


class RouteTarget(BaseModel):
    model_config = ConfigDict(frozen=True)
    adapter_name: str
    arm: Literal["active", "candidate", "base"]
    version: int  # 0 = base model, no adapter
    lora_int_id: int | None = None
    uri: str | None = None
    sha256: str | None = None
    base_model: str | None = None
    serve_base_model: str | None = None


class RouteTable(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    default: RouteTarget
    candidate: RouteTarget | None = None
    traffic: float = 0.0
    salt: str = ""


class RouteRequest(BaseModel):
    adapter_name: str
    request_key: str


def _target(state: AdapterState, version: int | None, arm: str) -> RouteTarget:
    if version is None:
        return RouteTarget(adapter_name=state.name, arm="base", version=BASE_VERSION)
    v = state.versions[version]
    return RouteTarget(adapter_name=state.name, arm=arm, version=version, lora_int_id=v.lora_int_id,
                       uri=v.artifact.uri, sha256=v.artifact.sha256, base_model=v.base_model,
                       serve_base_model=v.serve_base_model)


def route_table(state: AdapterState) -> RouteTable:
    default = _target(state, state.active, "active")
    if state.ab is None:
        return RouteTable(name=state.name, default=default)
    return RouteTable(name=state.name, default=default, candidate=_target(state, state.ab.candidate, "candidate"),
                      traffic=state.ab.traffic, salt=state.ab.salt)


def hash_unit(salt: str, request_key: str) -> float:
    digest = hashlib.blake2b(f"{salt}\0{request_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def pick(table: RouteTable, request_key: str) -> RouteTarget:
    if table.candidate is not None and hash_unit(table.salt, request_key) < table.traffic:
        return table.candidate
    return table.default


class Router:
    """In-process route cache over the registry bucket, kept fresh by a KV watch."""

    def __init__(self, kv, service: str = "registry") -> None:
        self.kv = kv
        self._route_seconds = metrics.REGISTRY_ROUTE_SECONDS.labels(service)
        self.tables: dict[str, RouteTable] = {}
        self.revisions: dict[str, int] = {}
        self._watcher = None
        self._task: asyncio.Task | None = None
        self._sub = None
        self.ready = asyncio.Event()

    def route(self, adapter_name: str, request_key: str) -> RouteTarget:
        with self._route_seconds.time():
            table = self.tables.get(adapter_name)
            if table is None:
                raise RegistryError(f"unknown adapter {adapter_name!r}: nothing is registered under that name")
            return pick(table, request_key)

    def apply(self, key: str, value: bytes | None, revision: int) -> None:
        if not key.startswith(KEY_PREFIX):
            return
        name = key[len(KEY_PREFIX):]
        if revision < self.revisions.get(name, 0):
            return
        self.revisions[name] = revision
        if not value:
            self.tables.pop(name, None)
            return
        try:
            self.tables[name] = route_table(AdapterState.model_validate_json(value))
        except ValidationError as exc:
            log.error("registry entry %s (revision %d) does not parse; keeping the old route: %s", key, revision, exc)

    async def start(self, timeout: float = 10.0) -> "Router":
        self._watcher = await self.kv.watch(f"{KEY_PREFIX}>")
        self._task = asyncio.create_task(self._follow())
        await asyncio.wait_for(self.ready.wait(), timeout)
        return self

    async def _follow(self) -> None:
        async for entry in self._watcher:
            if entry is None:  # end of the initial values
                self.ready.set()
                continue
            deleted = entry.operation in ("DEL", "PURGE")
            self.apply(entry.key, None if deleted else entry.value, entry.revision)
            if entry.delta == 0:
                self.ready.set()

    async def serve_requests(self, nc, queue: str = "registry-route") -> None:
        """Answer {adapter_name, request_key} on ROUTE_SUBJECT with a RouteTarget, or {"error": ...}."""

        async def on_request(msg) -> None:
            try:
                req = RouteRequest.model_validate_json(msg.data)
                reply = self.route(req.adapter_name, req.request_key).model_dump_json().encode()
            except (ValidationError, RegistryError) as exc:
                reply = json.dumps({"error": str(exc)}).encode()
            await msg.respond(reply)

        self._sub = await nc.subscribe(ROUTE_SUBJECT, queue=queue, cb=on_request)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
        if self._watcher is not None:
            await self._watcher.stop()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def request_route(nc, adapter_name: str, request_key: str, timeout: float = 2.0) -> RouteTarget:
    """Client side of ROUTE_SUBJECT (for serving code that doesn't embed a Router)."""
    msg = await nc.request(ROUTE_SUBJECT, RouteRequest(adapter_name=adapter_name, request_key=request_key)
                           .model_dump_json().encode(), timeout=timeout)
    data = json.loads(msg.data)
    if "error" in data:
        raise RegistryError(data["error"])
    return RouteTarget.model_validate(data)
