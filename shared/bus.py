"""The event bus: connecting, the one JetStream stream (and the advisory stream), publishing events.

A service's handlers are declared on a `Service` (service.py) and run by a `Runner`
(runner.py); dead letters are described in dead_letters.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError

from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.events import (
    DLQ_PREFIX,
    STREAM,
    SUBJECT_PREFIX,
    Event,
    StageFailed,
)
from lorafleet.shared.settings import Settings
from lorafleet.shared.telemetry.tracing import inject_headers

log = logging.getLogger("lorafleet.bus")

ADVISORY_STREAM = "LORAFLEET_ADVISORIES"
MAX_DELIVERIES_ADVISORY = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{STREAM}.*"

T = TypeVar("T")


def dlq_subject(service: str) -> str:
    return f"{DLQ_PREFIX}.{service}"


def subject_of(event: Event) -> str:
    return event.to_subject() if isinstance(event, StageFailed) else event.subject()


# --------------------------------------------------------------------------- connection


async def quiet_error(exc: Exception) -> None:
    log.info("nats: %s: %s", type(exc).__name__, exc)


def unreachable(servers: list[str], exc: BaseException) -> LorafleetError:
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
            max_reconnect_attempts=1, reconnect_time_wait=0.5, error_cb=quiet_error,
        )
    except Exception as exc:  # NoServersError, OSError, TimeoutError: all mean the same to a user
        raise unreachable(servers, exc) from exc
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
    headers = {"Nats-Msg-Id": event.event_id, "Lorafleet-Event-Type": subject_of(event).removeprefix(SUBJECT_PREFIX + ".")}
    return await js.publish(subject_of(event), event.to_bytes(), timeout=timeout, stream=STREAM,
                            headers=inject_headers(headers))  # + traceparent: the trace goes on downstream
