"""Server-sent events: every event on the bus and every registry change, fanned out to open pages.

One core-NATS subscription per dashboard process (re-attached by the reader on every
reconnect); each open page gets a bounded queue, and a page too slow to keep up
loses feed lines, never the dashboard's memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from lorafleet.services.registry.routing import KEY_PREFIX
from lorafleet.shared.events import SUBJECT_PREFIX

from .views import Rec, brief

log = logging.getLogger("lorafleet.dashboard")
QUEUE_SIZE = 500
KEEPALIVE_S = 10.0


class Hub:
    def __init__(self, reader: Any) -> None:
        self.reader = reader
        self.queues: set[asyncio.Queue] = set()

    async def start(self) -> None:
        await self.reader.subscribe(f"{SUBJECT_PREFIX}.>", self.on_event)
        bucket = self.reader.registry_settings.bucket
        await self.reader.subscribe(f"$KV.{bucket}.{KEY_PREFIX}>", self.on_registry)

    def send(self, kind: str, data: dict[str, Any]) -> None:
        for q in self.queues:
            try:
                q.put_nowait((kind, data))
            except asyncio.QueueFull:
                pass  # a stalled page misses feed lines; its next refresh reads the bus anyway

    async def on_event(self, msg) -> None:
        try:
            body = json.loads(msg.data)
        except ValueError:
            return
        if isinstance(body, dict):
            self.send("bus", brief(Rec(0, msg.subject.removeprefix(SUBJECT_PREFIX + "."), body)))

    async def on_registry(self, msg) -> None:
        name = msg.subject.split(".", 2)[-1].removeprefix(KEY_PREFIX)
        self.send("registry", {"adapter_name": name})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        q: asyncio.Queue = asyncio.Queue(maxsize=QUEUE_SIZE)
        self.queues.add(q)
        connected = None
        try:
            await resp.write(b"retry: 2000\n\n")
            while True:
                if self.reader.connected != connected:
                    connected = self.reader.connected
                    await _write(resp, "status", self.reader.status())
                try:
                    kind, data = await asyncio.wait_for(q.get(), timeout=1.0 if not connected else KEEPALIVE_S)
                except asyncio.TimeoutError:
                    await resp.write(b": keepalive\n\n")
                    continue
                if kind == "bye":  # the dashboard is stopping
                    break
                await _write(resp, kind, data)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.queues.discard(q)
        return resp


async def _write(resp: web.StreamResponse, kind: str, data: dict[str, Any]) -> None:
    await resp.write(f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n".encode())
