"""The event bus: one JetStream stream, one durable pull consumer per service, a runner.

A service module declares handlers on a `Service`; the runner (FastStream NATS
broker, pull subscriber, manual acks) does the reliability work:

- every replica of a service binds the same durable consumer, so they share the work;
- an unparsable message goes to `lorafleet.v1.dlq.<service>` at once and is terminated;
- while a handler runs, in-progress acks keep the message from being redelivered;
- returned events are published with `Nats-Msg-Id = event.event_id`, then the input is acked;
- an exception naks (with a growing delay); the last allowed delivery dead-letters instead.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import inspect
import logging
import signal
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError, NotFoundError
from pydantic import BaseModel, ConfigDict

from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.events import (
    DLQ_PREFIX,
    EVENTS_BY_TYPE,
    FAILED_STAGES,
    STREAM,
    SUBJECT_PREFIX,
    Event,
    StageFailed,
    event_type_of_subject,
    parse_event,
    subject_for,
)
from lorafleet.shared.settings import Settings, get_settings

log = logging.getLogger("lorafleet.bus")

ADVISORY_STREAM = "LORAFLEET_ADVISORIES"
MAX_DELIVERIES_ADVISORY = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{STREAM}.*"
SERVICES = ("ingest", "enrich", "trainer", "evaluator", "registry")
# Which `<stage>.failed` a service reports when a message exhausts its deliveries.
SERVICE_STAGE = {"ingest": "ingest", "enrich": "enrich", "trainer": "training",
                 "evaluator": "evaluation", "registry": "registry", "collector": "collector"}
# A dead letter carries at most this much of the original (the full message stays in the stream).
DLQ_ORIGINAL_MAX = 256 * 1024

E = TypeVar("E", bound=Event)
T = TypeVar("T")
Handler = Callable[[Any, "Context"], Awaitable["Event | Iterable[Event] | None"]]


def dlq_subject(service: str) -> str:
    return f"{DLQ_PREFIX}.{service}"


def subject_of(event: Event) -> str:
    return event.to_subject() if isinstance(event, StageFailed) else event.subject()


# --------------------------------------------------------------------------- connection


async def _quiet_error(exc: Exception) -> None:
    log.info("nats: %s: %s", type(exc).__name__, exc)


def _unreachable(servers: list[str], exc: BaseException) -> LorafleetError:
    return LorafleetError(
        f"cannot reach NATS at {', '.join(servers)} ({type(exc).__name__}: {exc or 'no servers available'}): "
        "start it with `lorafleet up` or point LORAFLEET_NATS_URL / --nats-url at a running server"
    )


def keep_reconnecting(nc: NatsClient) -> None:
    """After the first connect succeeds, reconnect forever (a service outlives server restarts)."""
    nc.options["max_reconnect_attempts"] = -1


async def connect(settings: Settings, *, name: str = "lorafleet", reconnect_forever: bool = True) -> NatsClient:
    """A nats-py client to the configured server(s); unreachable = LorafleetError with the fix."""
    servers = resolve_servers(settings)
    try:
        # nats-py retries a failing *first* connect forever unless attempts are bounded (0 means unbounded).
        nc = await nats.connect(
            servers=servers, name=name, connect_timeout=settings.connect_timeout_s,
            max_reconnect_attempts=1, reconnect_time_wait=0.5, error_cb=_quiet_error,
        )
    except Exception as exc:  # NoServersError, OSError, TimeoutError: all mean the same to a user
        raise _unreachable(servers, exc) from exc
    if reconnect_forever:
        keep_reconnecting(nc)
    return nc


def resolve_servers(settings: Settings) -> list[str]:
    """The configured URL(s); without one, the embedded server that `lorafleet up` recorded."""
    if settings.nats_servers():
        return settings.nats_servers()
    from lorafleet.shared.nats_server import read_embedded_url

    url = read_embedded_url(settings.data_dir)
    if url is None:
        raise LorafleetError(
            f"no NATS server configured and no embedded server running for {settings.data_dir.resolve()}: "
            "run `lorafleet up` (in this directory) or set LORAFLEET_NATS_URL / --nats-url"
        )
    return [url]


def stream_config(settings: Settings) -> api.StreamConfig:
    return api.StreamConfig(
        name=STREAM,
        subjects=[f"{SUBJECT_PREFIX}.>"],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        num_replicas=settings.stream_replicas,
        duplicate_window=settings.duplicate_window_s,
        max_age=settings.stream_max_age_days * 86400 if settings.stream_max_age_days else None,
    )


async def while_leaderless(call: Callable[[], Awaitable[T]], what: str, budget_s: float = 30.0) -> T:
    """Run a JetStream API call, retrying while the cluster has no leader to answer it.

    During a leader election (a node restarting, a fresh 3-node cluster placing a stream) API calls
    time out or answer 503; a service starting then should wait, not exit.
    """
    from nats.errors import NoRespondersError, TimeoutError as NatsTimeoutError
    from nats.js.errors import ServiceUnavailableError

    deadline = asyncio.get_running_loop().time() + budget_s
    delay = 0.25
    while True:
        try:
            return await call()
        except (NatsTimeoutError, NoRespondersError, ServiceUnavailableError) as exc:
            if asyncio.get_running_loop().time() + delay > deadline:
                raise
            log.warning("%s: JetStream not answering (%s), retrying in %.2fs", what, type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def ensure_stream(js: JetStreamContext, settings: Settings) -> None:
    """Create the event stream (and the stream that keeps max-delivery advisories), or update it."""
    for config in (
        stream_config(settings),
        api.StreamConfig(
            name=ADVISORY_STREAM, subjects=[MAX_DELIVERIES_ADVISORY], storage=api.StorageType.FILE,
            num_replicas=settings.stream_replicas, max_age=7 * 86400,
        ),
    ):
        try:
            await while_leaderless(lambda: js.add_stream(config), f"create stream {config.name}")
        except BadRequestError as exc:
            if "already in use" not in (exc.description or ""):
                raise
            await while_leaderless(lambda: js.update_stream(config), f"update stream {config.name}")


async def ensure_infrastructure(settings: Settings) -> None:
    """What `lorafleet up` creates before any service starts: the streams and the artifact bucket."""
    from lorafleet.shared.artifacts import ObjectStoreArtifacts, open_store

    nc = await connect(settings, name="lorafleet-setup", reconnect_forever=False)
    try:
        js = nc.jetstream()
        await ensure_stream(js, settings)
        store = open_store(settings, js=js)
        if isinstance(store, ObjectStoreArtifacts):
            await store.object_store()
    finally:
        await nc.close()


async def publish_event(js: JetStreamContext, event: Event, *, timeout: float = 5.0) -> api.PubAck:
    """Publish with `Nats-Msg-Id = event.event_id`: a second publish of the same id is recorded once."""
    return await js.publish(
        subject_of(event), event.to_bytes(), timeout=timeout, stream=STREAM,
        headers={"Nats-Msg-Id": event.event_id, "Lorafleet-Event-Type": subject_of(event).removeprefix(SUBJECT_PREFIX + ".")},
    )


# --------------------------------------------------------------------------- dead letters


class DeadLetter(BaseModel):
    """What `lorafleet.v1.dlq.<service>` carries: why, and the original message."""

    model_config = ConfigDict(extra="allow")
    service: str
    reason: str  # invalid | max_deliver | no_handler
    error: str
    subject: str
    stream_seq: int | None = None
    num_delivered: int | None = None
    event_id: str | None = None
    request_id: str | None = None
    original: str
    original_encoding: str = "utf-8"  # or base64
    original_truncated: bool = False
    dead_lettered_at: datetime

    def original_bytes(self) -> bytes:
        return base64.b64decode(self.original) if self.original_encoding == "base64" else self.original.encode()


def make_dead_letter(service: str, msg: Msg, reason: str, error: str, event: Event | None = None) -> DeadLetter:
    data = msg.data or b""
    truncated = len(data) > DLQ_ORIGINAL_MAX
    data = data[:DLQ_ORIGINAL_MAX]
    try:
        original, encoding = data.decode(), "utf-8"
    except UnicodeDecodeError:
        original, encoding = base64.b64encode(data).decode(), "base64"
    meta = _metadata(msg)
    return DeadLetter(
        service=service, reason=reason, error=error[-8000:], subject=msg.subject,
        stream_seq=meta.sequence.stream if meta else None,
        num_delivered=meta.num_delivered if meta else None,
        event_id=event.event_id if event else None, request_id=event.request_id if event else None,
        original=original, original_encoding=encoding, original_truncated=truncated,
        dead_lettered_at=datetime.now(timezone.utc),
    )


def _metadata(msg: Msg) -> Msg.Metadata | None:
    try:
        return msg.metadata
    except Exception:  # not a JetStream message (tests publishing on core NATS)
        return None


# --------------------------------------------------------------------------- service + context


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
        return await publish_event(self.js, event, timeout=self.settings.publish_timeout_s)

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

    def handler(self, event_cls: type[E]) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            for event_type in _event_types(event_cls):
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
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        async with self.running(settings):
            await stop.wait()


def _event_types(event_cls: type[Event]) -> list[str]:
    if event_cls is StageFailed:
        return [f"{stage}.failed" for stage in FAILED_STAGES]
    if EVENTS_BY_TYPE.get(event_cls.event_type) is not event_cls:
        raise ValueError(f"{event_cls.__name__} is not a registered event (shared/events.py ALL_EVENTS)")
    return [event_cls.event_type]


def _outcomes(result: Event | Iterable[Event] | None) -> list[Event]:
    if result is None:
        return []
    if isinstance(result, Event):
        return [result]
    return list(result)


def _framework_logger(service: str) -> logging.Logger:
    """FastStream's own chatter (per-message and shutdown lines) only at WARNING and above."""
    logger = logging.getLogger(f"lorafleet.bus.{service}")
    logger.setLevel(logging.WARNING)
    return logger


class Runner:
    """One running replica of a service.

    The FastStream NATS broker owns the connection and its lifecycle; the consume
    loop pulls from the durable consumer with nats-py directly. FastStream's own
    per-message pipeline (middlewares, context scopes, dependency solving) cost
    ~7x the consume throughput of raw nats-py here (benchmarks/bus.py), and a
    batch-at-a-time pull would let one long job hold back the rest of its batch.
    """

    FETCH_TIMEOUT_S = 0.5

    def __init__(self, service: Service, settings: Settings) -> None:
        self.service = service
        self.settings = settings
        self.broker: Any = None
        self.ctx: Context | None = None
        self.processed = 0  # messages acked, for tests and logs
        self._sub: Any = None
        self._loop_task: asyncio.Task | None = None
        self._inflight: set[asyncio.Task] = set()
        self._stopping = False

    async def start(self) -> None:
        from faststream.nats import NatsBroker

        service, settings = self.service, self.settings
        if not service.handlers and not service.start_hooks:
            raise LorafleetError(f"service {service.name} has no handlers and no start hooks: nothing to run")
        servers = resolve_servers(settings)
        self.broker = broker = NatsBroker(
            servers, name=f"lorafleet-{service.name}", connect_timeout=settings.connect_timeout_s,
            max_reconnect_attempts=1, reconnect_time_wait=0.5, error_cb=_quiet_error,
            logger=_framework_logger(service.name), log_level=logging.DEBUG,
        )
        try:
            await broker.connect()
        except Exception as exc:
            raise _unreachable(servers, exc) from exc
        state = broker.config.connection_state
        nc, js = state.connection, state.stream
        keep_reconnecting(nc)
        await ensure_stream(js, settings)
        if service.handlers:
            # Create or update (new handler subjects, new max_deliver): the server keeps a consumer's
            # first config otherwise. Every replica does the same, which is idempotent.
            await while_leaderless(
                lambda: js.add_consumer(STREAM, config=service.consumer_config(settings)), f"consumer {service.name}"
            )
        deps = service.bootstrap(settings) if service.bootstrap else None
        if inspect.isawaitable(deps):
            deps = await deps
        from lorafleet.shared.artifacts import open_store

        self.ctx = Context(service.name, settings, deps, open_store(settings, js=js), nc, js, broker=broker)
        for hook in service.start_hooks:
            await hook(self.ctx)
        await broker.start()
        if service.handlers:
            self._sub = await js.pull_subscribe_bind(durable=service.name, stream=STREAM)
            self._loop_task = asyncio.create_task(self._consume(), name=f"lorafleet-{service.name}-consume")
        log.info("service %s consuming %s", service.name, ", ".join(service.subjects) or "(nothing)")

    async def _consume(self) -> None:
        """Keep `concurrency` handlers busy: pull only as many messages as there are free slots."""
        from nats.errors import ConnectionClosedError, TimeoutError as NatsTimeoutError

        while not self._stopping:
            free = self.service.concurrency - len(self._inflight)
            if free <= 0:
                await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
                continue
            if free < self.service.concurrency // 2:
                # Let a few more slots free up (2 ms at most) so one pull fetches several messages
                # instead of one round trip per message.
                await asyncio.wait(self._inflight, timeout=0.002)
                free = self.service.concurrency - len(self._inflight)
            try:
                msgs = await self._sub.fetch(free, timeout=self.FETCH_TIMEOUT_S)
            except (NatsTimeoutError, asyncio.TimeoutError):
                continue
            except ConnectionClosedError:
                return
            except Exception as exc:  # reconnecting, server restarting: keep trying
                log.info("%s: fetch failed (%s: %s); retrying", self.service.name, type(exc).__name__, exc)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                task = asyncio.create_task(self._handle_safely(msg))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)

    async def _handle_safely(self, msg: Msg) -> None:
        try:
            await self.handle(msg)
        except asyncio.CancelledError:
            # Stopped mid-handler: hand the message back now rather than after ack_wait.
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        except Exception:
            # Publishing the outcome or a dead letter failed (server gone?): redelivery will retry.
            log.exception("%s: could not finish %s; it will be redelivered", self.service.name, msg.subject)
            with contextlib.suppress(Exception):
                await msg.nak(delay=self.settings.retry_delay_s or None)

    async def stop(self, grace_s: float = 10.0) -> None:
        self._stopping = True
        if self._loop_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._loop_task, timeout=self.FETCH_TIMEOUT_S + 2)
            self._loop_task = None
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("%s: stopped %d running handler(s); their messages go back to the queue",
                            self.service.name, len(pending))
                await asyncio.wait(pending, timeout=5)
        if self.ctx is not None:
            for hook in self.service.stop_hooks:
                try:
                    await hook(self.ctx)
                except Exception:
                    log.exception("%s: stop hook failed", self.service.name)
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        if self.broker is not None:
            await self.broker.stop()
            self.broker = None

    async def handle(self, msg: Msg) -> None:
        """The whole life of one delivery: parse, handle with heartbeat, publish, ack / nak / dead-letter."""
        assert self.ctx is not None
        service = self.service
        try:
            event = parse_event(msg.subject, msg.data)
            entry = service.handlers.get(event_type_of_subject(msg.subject))
        except ValueError as exc:
            await self._dead_letter(msg, "invalid", str(exc))
            return
        if entry is None:
            await self._dead_letter(msg, "no_handler", f"service {service.name} has no handler for {msg.subject}", event)
            return
        _, fn = entry
        ctx = dataclasses.replace(self.ctx, msg=msg)
        heartbeat = asyncio.create_task(self._heartbeat(msg))
        try:
            for outcome in _outcomes(await fn(event, ctx)):
                await ctx.publish(outcome)
        except Exception as exc:
            heartbeat.cancel()
            await self._failed(msg, event, exc)
            return
        finally:
            heartbeat.cancel()
        await msg.ack()
        self.processed += 1

    async def _heartbeat(self, msg: Msg) -> None:
        interval = self.settings.heartbeat_interval_s
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):  # a lost in-progress ack only risks a redelivery
                await msg.in_progress()

    async def _failed(self, msg: Msg, event: Event, exc: Exception) -> None:
        meta = _metadata(msg)
        delivered = meta.num_delivered if meta else 1
        error = f"{type(exc).__name__}: {exc}"
        if delivered < self.settings.max_deliver:
            delay = min(self.settings.retry_delay_s * delivered, 60.0)
            log.warning("%s: %s failed (delivery %d/%d), retrying in %.1fs: %s", self.service.name,
                        event.event_type, delivered, self.settings.max_deliver, delay, error)
            await msg.nak(delay=delay or None)
            return
        detail = error + "\n" + "".join(traceback.format_exception(exc)[-6:])
        if self.service.stage is not None:
            failed = event.follow(StageFailed, 999_999, stage=self.service.stage, error=error[:2000],
                                  retriable=False, input_event_id=event.event_id,
                                  adapter_name=getattr(event, "adapter_name", None))
            with contextlib.suppress(Exception):
                await publish_event(self.ctx.js, failed, timeout=self.settings.publish_timeout_s)
        await self._dead_letter(msg, "max_deliver", detail, event)

    async def _dead_letter(self, msg: Msg, reason: str, error: str, event: Event | None = None) -> None:
        assert self.ctx is not None
        letter = make_dead_letter(self.service.name, msg, reason, error, event)
        log.error("%s: dead-lettered %s (%s): %s", self.service.name, msg.subject, reason, error.splitlines()[0][:500])
        msg_id = f"dlq:{self.service.name}:{letter.stream_seq}" if letter.stream_seq else None
        await self.ctx.js.publish(
            dlq_subject(self.service.name), letter.model_dump_json().encode(), stream=STREAM,
            timeout=self.settings.publish_timeout_s,
            headers={"Nats-Msg-Id": msg_id, "Lorafleet-Dlq-Reason": reason} if msg_id else {"Lorafleet-Dlq-Reason": reason},
        )
        if _metadata(msg) is not None:
            await msg.term()


def load_service(name: str) -> Service:
    """`lorafleet.services.<name>.app:service`; a missing or broken module is a clear error."""
    import importlib

    module_name = f"lorafleet.services.{name}.app"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise LorafleetError(f"service {name!r} has no app module ({module_name}): is the service implemented?") from exc
        raise LorafleetError(f"service {name!r} needs {exc.name!r}, which is not installed: "
                             f"install the extra, e.g. pip install 'lorafleet[{name}]'") from exc
    service = getattr(module, "service", None)
    if not isinstance(service, Service):
        raise LorafleetError(f"{module_name} has no `service = Service(...)`")
    return service
