"""One running replica of a service: the consume loop and the reliability rules.

- every replica of a service binds the same durable consumer, so they share the work;
- an unparsable message goes to `lorafleet.v1.dlq.<service>` at once and is terminated;
- while a handler runs, in-progress acks keep the message from being redelivered;
- returned events are published with `Nats-Msg-Id = event.event_id`, then the input is acked;
- an exception naks (with a growing delay); the last allowed delivery dead-letters instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import time
import traceback
from typing import Any

from nats.aio.msg import Msg
from opentelemetry.trace import StatusCode

from lorafleet.shared.bus import STREAM, dlq_subject, ensure_stream, keep_reconnecting, publish_event, quiet_error, resolve_servers, unreachable, while_leaderless
from lorafleet.shared.dead_letters import make_dead_letter, message_metadata
from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.events import Event, StageFailed, event_type_of_subject, parse_event
from lorafleet.shared.service import Context, Service, outcomes_of
from lorafleet.shared.settings import Settings
from lorafleet.shared.telemetry import metrics
from lorafleet.shared.telemetry.health import bound_port, start_health_server
from lorafleet.shared.telemetry.tracing import configure_tracing, consumer_span, shutdown_tracing

log = logging.getLogger("lorafleet.bus")


def _framework_logger(service: str) -> logging.Logger:
    """FastStream's own chatter (per-message and shutdown lines) only at WARNING and above."""
    logger = logging.getLogger(f"lorafleet.bus.{service}")
    logger.setLevel(logging.WARNING)
    return logger


@dataclasses.dataclass(frozen=True)
class _HandlerMetrics:
    handled: Any
    failed: Any
    redeliveries: Any
    seconds: Any
    in_flight: Any


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
        self._health: Any = None
        self._children: dict[str, _HandlerMetrics] = {}
        self.metrics_port: int | None = None  # where /metrics, /health, /ready answer (None: not served)

    async def start(self) -> None:
        from faststream.nats import NatsBroker

        service, settings = self.service, self.settings
        if not service.handlers and not service.start_hooks:
            raise LorafleetError(f"service {service.name} has no handlers and no start hooks: nothing to run")
        configure_tracing(service.name)
        if settings.metrics_port is not None:  # first: /health answers while NATS is still being reached
            self._health = await start_health_server(service.name, settings.metrics_host, settings.metrics_port,
                                                     [self._not_ready, *service.readiness_checks])
            self.metrics_port = bound_port(self._health)
            log.info("%s: metrics on http://%s:%d/metrics", service.name, settings.metrics_host, self.metrics_port)
        servers = resolve_servers(settings)
        self.broker = broker = NatsBroker(
            servers, name=f"lorafleet-{service.name}", connect_timeout=settings.connect_timeout_s,
            max_reconnect_attempts=1, reconnect_time_wait=0.5, error_cb=quiet_error,
            logger=_framework_logger(service.name), log_level=logging.DEBUG,
        )
        try:
            await broker.connect()
        except Exception as exc:
            raise unreachable(servers, exc) from exc
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

    def _not_ready(self) -> str | None:
        """/ready's own check: connected to NATS and, for a consuming service, bound to its consumer."""
        nc = self.ctx.nc if self.ctx is not None else None
        if nc is None or not nc.is_connected:
            return "not connected to NATS"
        if self.service.handlers and (self._sub is None or self._loop_task is None or self._loop_task.done()):
            return f"not consuming from the {self.service.name} consumer"
        return None

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
        if self._health is not None:
            await self._health.cleanup()
            self._health = None
        shutdown_tracing()

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
        event_type = event_type_of_subject(msg.subject)
        m = self._metrics(event_type)
        meta = message_metadata(msg)
        if meta is not None and meta.num_delivered > 1:
            m.redeliveries.inc()
        ctx = dataclasses.replace(self.ctx, msg=msg)
        # One span per delivery, a child of the span that published the event (its traceparent header).
        with consumer_span(f"{service.name} {event_type}", msg.headers, {
                "lorafleet.event_id": event.event_id, "lorafleet.request_id": event.request_id,
                "messaging.message.delivery_count": meta.num_delivered if meta else 1}) as span:
            heartbeat = asyncio.create_task(self._heartbeat(msg))
            m.in_flight.inc()
            started = time.perf_counter()
            try:
                for outcome in outcomes_of(await fn(event, ctx)):
                    await ctx.publish(outcome)
            except Exception as exc:
                heartbeat.cancel()
                m.failed.inc()
                span.record_exception(exc)
                span.set_status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:200])
                await self._failed(msg, event, exc)
                return
            finally:
                heartbeat.cancel()
                m.in_flight.dec()
                m.seconds.observe(time.perf_counter() - started)
            await msg.ack()
        m.handled.inc()
        self.processed += 1

    def _metrics(self, event_type: str) -> "_HandlerMetrics":
        """This service's metric children for one event type, looked up once (labels() costs per call)."""
        found = self._children.get(event_type)
        if found is None:
            labels = (self.service.name, event_type)
            found = self._children[event_type] = _HandlerMetrics(
                metrics.EVENTS_HANDLED.labels(*labels), metrics.EVENTS_FAILED.labels(*labels),
                metrics.REDELIVERIES.labels(*labels), metrics.HANDLER_SECONDS.labels(*labels),
                metrics.IN_FLIGHT.labels(self.service.name))
        return found

    async def _heartbeat(self, msg: Msg) -> None:
        interval = self.settings.heartbeat_interval_s
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):  # a lost in-progress ack only risks a redelivery
                await msg.in_progress()

    async def _failed(self, msg: Msg, event: Event, exc: Exception) -> None:
        meta = message_metadata(msg)
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
        metrics.EVENTS_DEAD_LETTERED.labels(self.service.name, reason).inc()
        log.error("%s: dead-lettered %s (%s): %s", self.service.name, msg.subject, reason, error.splitlines()[0][:500])
        msg_id = f"dlq:{self.service.name}:{letter.stream_seq}" if letter.stream_seq else None
        await self.ctx.js.publish(
            dlq_subject(self.service.name), letter.model_dump_json().encode(), stream=STREAM,
            timeout=self.settings.publish_timeout_s,
            headers={"Nats-Msg-Id": msg_id, "Lorafleet-Dlq-Reason": reason} if msg_id else {"Lorafleet-Dlq-Reason": reason},
        )
        if message_metadata(msg) is not None:
            await msg.term()
