"""A service: its name (the durable consumer), the events it handles, its start hooks, its dependencies.

A service module declares `service = Service(...)` and handlers named after the events they take;
the `Runner` (runner.py) does the consuming, acking, retrying and dead-lettering.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from lorafleet.shared.bus import publish_event, subject_of
from lorafleet.shared.events import EVENTS_BY_TYPE, FAILED_STAGES, SUBJECT_PREFIX, Event, StageFailed, subject_for
from lorafleet.shared.processes import stop_on_signals
from lorafleet.shared.settings import Settings, get_settings
from lorafleet.shared.telemetry.metrics import EVENTS_PUBLISHED

if TYPE_CHECKING:
    from lorafleet.shared.runner import Runner

# Which `<stage>.failed` a service reports when a message exhausts its deliveries.
SERVICE_STAGE = {"ingest": "ingest", "enrich": "enrich", "trainer": "training",
                 "evaluator": "evaluation", "registry": "registry", "collector": "collector"}

E = TypeVar("E", bound=Event)
Handler = Callable[[Any, "Context"], Awaitable["Event | Iterable[Event] | None"]]


@dataclass
class Context:
    """What a handler gets besides its event. One per message; `on_start` gets one without a message."""

    service: str
    settings: Settings
    deps: Any
    artifacts: Any
    nc: NatsClient
    js: JetStreamContext
    msg: Msg | None = None
    broker: Any = None  # the FastStream NatsBroker (its publishers, kv/object-store helpers)

    async def publish(self, event: Event) -> api.PubAck:
        ack = await publish_event(self.js, event, timeout=self.settings.publish_timeout_s)
        EVENTS_PUBLISHED.labels(self.service, subject_of(event).removeprefix(SUBJECT_PREFIX + ".")).inc()
        return ack

    async def in_progress(self) -> None:
        """Extend the ack deadline of the message being handled (the runner also does it periodically)."""
        if self.msg is not None:
            await self.msg.in_progress()


class Service:
    """A named service: its handlers, its start hooks and how to build its dependencies."""

    def __init__(
        self,
        name: str,
        *,
        bootstrap: Callable[[Settings], Any] | None = None,
        concurrency: int = 1,
        stage: str | None = None,
    ) -> None:
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"service name {name!r} must be alphanumeric (it names a durable consumer)")
        self.name = name
        self.bootstrap = bootstrap
        self.concurrency = concurrency
        self.stage = stage or SERVICE_STAGE.get(name)
        self.handlers: dict[str, tuple[type[Event], Handler]] = {}
        self.start_hooks: list[Callable[[Context], Awaitable[None]]] = []
        self.stop_hooks: list[Callable[[Context], Awaitable[None]]] = []
        # Extra /ready checks (a dependency the service can't work without): None = fine, else the reason.
        self.readiness_checks: list[Callable[[], str | None]] = []

    def handler(self, event_cls: type[E]) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            for event_type in event_types(event_cls):
                if event_type in self.handlers:
                    raise ValueError(f"service {self.name} already handles {event_type}")
                self.handlers[event_type] = (event_cls, fn)
            return fn

        return register

    def on_start(self, fn: Callable[[Context], Awaitable[None]]) -> Callable[[Context], Awaitable[None]]:
        self.start_hooks.append(fn)
        return fn

    def on_stop(self, fn: Callable[[Context], Awaitable[None]]) -> Callable[[Context], Awaitable[None]]:
        self.stop_hooks.append(fn)
        return fn

    @property
    def subjects(self) -> list[str]:
        subjects = {f"{SUBJECT_PREFIX}.*.failed" if event_type.endswith(".failed") else subject_for(event_type)
                    for event_type in self.handlers}
        return sorted(subjects)

    def consumer_config(self, settings: Settings) -> api.ConsumerConfig:
        return api.ConsumerConfig(
            name=self.name,
            durable_name=self.name,
            filter_subjects=self.subjects,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            max_deliver=settings.max_deliver,
            ack_wait=settings.ack_wait_s,
            max_ack_pending=max(1000, self.concurrency * 10),
        )

    @contextlib.asynccontextmanager
    async def running(self, settings: Settings | None = None) -> AsyncIterator["Runner"]:
        """Connect, set up, start consuming; stop cleanly on exit. For `serve` and tests."""
        from lorafleet.shared.runner import Runner  # runner.py builds on this module

        runner = Runner(self, settings or get_settings())
        try:
            await runner.start()
        except BaseException:
            await runner.stop(grace_s=0)  # a failed bootstrap or start hook must not leak the connection
            raise
        try:
            yield runner
        finally:
            await runner.stop()

    async def run(self, settings: Settings | None = None, stop: asyncio.Event | None = None) -> None:
        """Run until `stop` is set or SIGINT/SIGTERM arrives."""
        stop = stop_on_signals(stop)
        async with self.running(settings):
            await stop.wait()


def event_types(event_cls: type[Event]) -> list[str]:
    if event_cls is StageFailed:
        return [f"{stage}.failed" for stage in FAILED_STAGES]
    if EVENTS_BY_TYPE.get(event_cls.event_type) is not event_cls:
        raise ValueError(f"{event_cls.__name__} is not a registered event (shared/events.py ALL_EVENTS)")
    return [event_cls.event_type]


def outcomes_of(result: Event | Iterable[Event] | None) -> list[Event]:
    if result is None:
        return []
    if isinstance(result, Event):
        return [result]
    return list(result)
