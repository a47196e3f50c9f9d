"""The gateway on HTTP: handlers named after the requests they take, wired to the pure core.

`start_gateway(settings, gateway)` starts it in this process and returns a `RunningGateway`
(its port and url, `stop()`); `spawn_gateway(env)` starts `lorafleet serve gateway` as a
subprocess and returns (process, url); `run(settings, gateway)` is what `serve` calls.
See docs/gateway.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from lorafleet.services.registry.routing import RouteTable, RouteTarget, Router, pick
from lorafleet.shared.events import ProductionOutcome
from lorafleet.shared.problems import Limits
from lorafleet.shared.prompts import extract_code
from lorafleet.shared.processes import stop_on_signals
from lorafleet.shared.settings import Settings, get_settings
from lorafleet.shared.telemetry import metrics
from lorafleet.shared.telemetry.health import health_app, start_health_server

from . import core
from .backends import CONNECT_ERRORS, Backends, BackendDown
from .bootstrap import Deps, bootstrap
from .settings import GatewaySettings
from .spool import OutcomePublisher, Spool

log = logging.getLogger(__name__)
ROUTE_HEADER = "x-lorafleet-route-key"
FEEDBACK_SUBJECT = "lorafleet.rpc.v1.gateway.feedback"  # core NATS, outside the stream (like the route subject)
READY_LINE = "gateway listening on"
REQUEST_ID = web.RequestKey("lorafleet_request_id", str)
RESPONSE = web.RequestKey("lorafleet_response", web.StreamResponse)


class Gateway:
    def __init__(self, deps: Deps, nc, js, router: Router, backends: Backends, publisher: OutcomePublisher) -> None:
        self._route_seconds = metrics.REGISTRY_ROUTE_SECONDS.labels("gateway")
        self.deps = deps
        self.gw = deps.gateway
        self.nc = nc
        self.js = js
        self.router = router
        self.backends = backends
        self.publisher = publisher
        self.pending = core.PendingTable(self.gw.outcome_wait_s, self.gw.pending_max)
        self.queue: asyncio.Queue = asyncio.Queue(self.gw.judge_queue)
        self.keys = {f"Bearer {k}" for k in self.gw.api_keys}
        self.stats = {"requests": 0, "judged": 0, "judge_dropped": 0, "feedback": 0, "errors": 0}
        self.tasks: list[asyncio.Task] = []
        self._sub = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.tasks += [asyncio.create_task(self._judge_worker()) for _ in range(self.gw.judge_workers)]
        self.tasks.append(asyncio.create_task(self._housekeeping()))
        self._sub = await self.nc.subscribe(FEEDBACK_SUBJECT, cb=self.on_forwarded_feedback)

    async def stop(self, grace_s: float = 10.0) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:
                pass
        try:  # answers already sent still get their outcome
            await asyncio.wait_for(self.queue.join(), grace_s)
        except asyncio.TimeoutError:
            log.warning("stopping with %d request(s) not judged: they get no outcome", self.queue.qsize())
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def app(self) -> web.Application:
        middlewares = [self._errors, self._auth] if self.keys else [self._errors]
        app = web.Application(middlewares=middlewares, client_max_size=32 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.on_chat_completions)
        app.router.add_post("/v1/completions", self.on_completions)
        app.router.add_get("/v1/models", self.on_models)
        app.router.add_post("/v1/feedback", self.on_feedback)
        app.router.add_get("/health", self.on_health)
        # /metrics and /ready on the serving port too (the one a load balancer and Prometheus already see).
        for route in health_app("gateway", [self.not_ready]).router.routes():
            if route.method == "GET" and route.resource.canonical in ("/metrics", "/ready"):
                app.router.add_get(route.resource.canonical, route.handler)
        return app

    def not_ready(self) -> str | None:
        """/ready: following the registry, connected to NATS, and at least one backend not marked dead."""
        if not self.router.ready.is_set():
            return "the registry's routes are not loaded yet"
        if not self.nc.is_connected:
            return "not connected to NATS (outcomes are spooled meanwhile)"
        now = time.monotonic()
        if self.backends.states and all(b.dead_until > now for b in self.backends.states):
            return "no inference backend is up"
        return None

    @web.middleware
    async def _errors(self, request: web.Request, handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except core.ApiError as exc:
            self.stats["errors"] += 1
            if request.path.startswith("/v1/") and request.path != "/v1/feedback":
                metrics.GATEWAY_REQUESTS.labels("gateway", "-", "-", "-", str(exc.status)).inc()
            headers = dict(exc.headers)
            if REQUEST_ID in request:
                headers["x-request-id"] = request[REQUEST_ID]
            return web.json_response(exc.body(), status=exc.status, headers=headers)

    @web.middleware
    async def _auth(self, request: web.Request, handler) -> web.StreamResponse:
        if self.keys and request.path.startswith("/v1/") and request.headers.get("Authorization") not in self.keys:
            raise core.ApiError(401, "a valid API key is required: send `Authorization: Bearer <key>` (one of "
                                     "LORAFLEET_GATEWAY_API_KEYS)", code="invalid_api_key")
        return await handler(request)

    # ------------------------------------------------------------------ handlers

    async def on_chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "chat")

    async def on_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "completion")

    async def on_models(self, request: web.Request) -> web.Response:
        data = []
        for name, table in sorted(self.router.tables.items()):
            arms = [t for t in (table.default, table.candidate) if t is not None]
            parent = next((t.serve_base_model or t.base_model for t in arms if t.base_model), None)
            data.append({"id": name, "object": "model", "created": 0, "owned_by": "lorafleet", "parent": parent,
                         "lorafleet": {"active_version": table.default.version,
                                       "candidate_version": table.candidate.version if table.candidate else None,
                                       "candidate_traffic": table.traffic if table.candidate else 0.0}})
        data += [{"id": b, "object": "model", "created": 0, "owned_by": "lorafleet", "parent": None}
                 for b in self.backends.bases() if b not in self.router.tables]
        return web.json_response({"object": "list", "data": data})

    async def on_feedback(self, request: web.Request) -> web.Response:
        body = core.parse_json(await request.read())
        request_id, success, confidence = core.parse_feedback(body)
        try:
            entry = self.pending.take_feedback(request_id, time.monotonic())
        except core.FeedbackError as exc:
            if exc.status != 404:
                raise
            answer = await self._forward_feedback(body)
            if answer is None:
                raise
            if answer["status"] != 202:
                raise core.ApiError(answer["status"], answer["message"], param="request_id") from None
            return web.json_response({"request_id": request_id, "status": "accepted"}, status=202)
        self.stats["feedback"] += 1
        await self.publisher.publish(entry.outcome(success, confidence))
        return web.json_response({"request_id": request_id, "status": "accepted"}, status=202)

    async def on_health(self, request: web.Request) -> web.Response:
        ready = self.router.ready.is_set()
        now = time.monotonic()
        body = {
            "status": "ok" if ready else "starting",
            "nats_connected": self.nc.is_connected,
            "adapters": sorted(self.router.tables),
            "backends": [{"url": b.url, "up": b.dead_until <= now, "in_flight": b.in_flight, "bases": b.bases,
                          "loaded": sorted(self.backends.loaded[b.url])} for b in self.backends.states],
            "judge_queue": self.queue.qsize(),
            "pending_feedback": sum(e.state == "waiting" for e in self.pending.entries.values()),
            "spool": len(self.publisher.spool), "spool_dropped": self.publisher.spool.dropped,
            "published": self.publisher.published, "spooled": self.publisher.spooled,
            **self.stats,
        }
        return web.json_response(body, status=200 if ready else 503)

    async def on_forwarded_feedback(self, msg) -> None:
        """Feedback another replica got for a request this one served; silent if it isn't ours."""
        try:
            body = json.loads(msg.data)
            request_id, success, confidence = core.parse_feedback(body)
            entry = self.pending.take_feedback(request_id, time.monotonic())
        except core.FeedbackError as exc:
            if exc.status != 404:
                await msg.respond(json.dumps({"status": exc.status, "message": exc.message}).encode())
            return
        except (ValueError, core.ApiError):
            return
        self.stats["feedback"] += 1
        await self.publisher.publish(entry.outcome(success, confidence))
        await msg.respond(json.dumps({"status": 202, "message": "accepted"}).encode())

    async def _forward_feedback(self, body: dict[str, Any]) -> dict[str, Any] | None:
        if not self.nc.is_connected:
            return None
        try:
            reply = await self.nc.request(FEEDBACK_SUBJECT, json.dumps(body).encode(), timeout=self.gw.feedback_forward_s)
            return json.loads(reply.data)
        except Exception:  # no other replica knows it (timeout, no responders)
            return None

    # ------------------------------------------------------------------ serving

    async def _serve(self, request: web.Request, kind: str) -> web.StreamResponse:
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        request[REQUEST_ID] = request_id
        self.stats["requests"] += 1
        body = core.parse_json(await request.read())
        parsed = core.parse_chat(body) if kind == "chat" else core.parse_completion(body)
        headers = {"x-request-id": request_id}
        table = self.router.tables.get(parsed.model)
        target: RouteTarget | None = None
        key = ""
        if table is not None:
            key = core.route_key(parsed.user, request.headers.get(ROUTE_HEADER), request_id)
            with self._route_seconds.time():
                target = pick(table, key)
            headers.update({"x-lorafleet-adapter": parsed.model, "x-lorafleet-version": str(target.version),
                            "x-lorafleet-arm": target.arm})
        elif parsed.model not in self.backends.bases():
            if not self.backends.bases():
                await self.backends.refresh()  # maybe a backend came up since the last look
            if parsed.model not in self.backends.bases():
                raise core.unknown_model(parsed.model, self.router.tables, self.backends.bases())
        path = "/chat/completions" if kind == "chat" else "/completions"
        try:
            answer = await self._forward(request, parsed, table, target, path, headers)
        except core.ApiError as exc:
            if target is not None and core.serving_failed(exc.status, None):
                await self._serving_failed(request_id, parsed.model, target.version, key, started)
            raise
        latency_ms = (time.perf_counter() - started) * 1000
        status = request[RESPONSE].status
        count_request(parsed.model, target, status, latency_ms, answer, parsed.stream)
        if target is not None and core.serving_failed(status, answer):
            await self._serving_failed(request_id, parsed.model, target.version, key, started)
        if answer is None or target is None:
            return request[RESPONSE]
        self._record(core.Pending(request_id=request_id, adapter=parsed.model, version=target.version, route_key=key,
                                  latency_ms=latency_ms, problem=parsed.problem, answer=answer, tests=parsed.tests,
                                  created=time.monotonic(), kind=parsed.kind, streamed=parsed.stream, n=parsed.n),
                     parsed.limits)
        return request[RESPONSE]

    async def _backend_model(self, backend, table: RouteTable | None, target: RouteTarget | None, model: str) -> str:
        if target is None:
            return model
        if target.version > 0:
            return await self.backends.ensure_loaded(backend, target)
        arms = [t for t in (table.default, table.candidate) if t is not None]
        base = core.base_for([n for t in arms for n in (t.serve_base_model, t.base_model)], backend.bases)
        if base is None:
            raise BackendDown("serves no base model")
        return base

    async def _forward(self, request: web.Request, parsed: core.Parsed, table, target, path: str,
                       headers: dict[str, str]) -> bytes | None:
        """Send the request to a backend and the answer to the client; the answer as relayed, or None."""
        # unrouted: only the backends that serve the base model asked for
        tried = {b.url for b in self.backends.states if b.bases and parsed.model not in b.bases} if target is None else set()
        reloaded = False
        while True:
            backend = self.backends.choose(tried)
            try:
                model = await self._backend_model(backend, table, target, parsed.model)
            except BackendDown:  # unreachable (marked dead by the load) or no base model there: try another
                tried.add(backend.url)
                continue
            payload = json.dumps({**parsed.body, "model": model}).encode()
            backend.in_flight += 1
            try:
                resp = await self.backends.session.post(
                    backend.url + path, data=payload, headers={"Content-Type": "application/json"},
                    timeout=aiohttp.ClientTimeout(total=self.gw.request_timeout_s))
            except asyncio.TimeoutError:
                backend.in_flight -= 1
                metrics.GATEWAY_BACKEND_ERRORS.labels("gateway", backend.url).inc()
                raise core.ApiError(504, f"backend {backend.url} did not answer within {self.gw.request_timeout_s:g} s",
                                    type="timeout") from None
            except CONNECT_ERRORS as exc:
                backend.in_flight -= 1
                metrics.GATEWAY_BACKEND_ERRORS.labels("gateway", backend.url).inc()
                self.backends.mark_dead(backend, f"{type(exc).__name__}: {exc}")
                tried.add(backend.url)
                continue
            try:
                if resp.status == 404 and target is not None and target.version > 0 and not reloaded:
                    # The backend lost the adapter (restarted between two looks): load it again, once.
                    self.backends.loaded[backend.url].pop(model, None)
                    reloaded = True
                    continue
                if parsed.stream and resp.status == 200:
                    return await self._relay_stream(request, resp, parsed, model, headers, backend)
                return await self._relay(request, resp, parsed, model, headers)
            finally:
                backend.in_flight -= 1
                resp.release()

    async def _relay(self, request, resp, parsed: core.Parsed, model: str, headers: dict[str, str]) -> bytes | None:
        data = await resp.read()
        if resp.status != 200:
            request[RESPONSE] = web.Response(body=data, status=resp.status, headers=headers,
                                             content_type=resp.content_type or "application/json")
            return None
        if model != parsed.model:  # the client sees the model it asked for (a quoted JSON string can't occur
            data = data.replace(json.dumps(model).encode(), json.dumps(parsed.model).encode())  # inside another)
        out = web.Response(body=data, headers=headers, content_type="application/json")
        await out.prepare(request)
        await out.write_eof()
        request[RESPONSE] = out
        return data

    async def _relay_stream(self, request, resp, parsed: core.Parsed, model: str, headers: dict[str, str],
                            backend) -> bytes | None:
        out = web.StreamResponse(status=200, headers={**headers, "Content-Type": "text/event-stream",
                                                      "Cache-Control": "no-cache"})
        await out.prepare(request)
        request[RESPONSE] = out
        ours, theirs = json.dumps(parsed.model).encode(), json.dumps(model).encode()
        kept: list[bytes] = []
        rest = b""
        try:
            async for chunk in resp.content.iter_any():
                data = rest + chunk
                cut = data.rfind(b"\n") + 1  # whole lines only: a model name is never split
                whole, rest = data[:cut], data[cut:]
                if whole:
                    if theirs != ours:
                        whole = whole.replace(theirs, ours)
                    kept.append(whole)
                    await out.write(whole)
            if rest:
                kept.append(rest.replace(theirs, ours))
                await out.write(kept[-1])
        except (aiohttp.ClientPayloadError, *CONNECT_ERRORS) as exc:
            self.backends.mark_dead(backend, f"stream broke: {type(exc).__name__}")
            return None  # the answer is incomplete: no outcome
        await out.write_eof()
        return b"".join(kept)

    # ------------------------------------------------------------------ outcomes

    async def _serving_failed(self, request_id: str, adapter: str, version: int, route_key: str, started: float) -> None:
        latency_ms = (time.perf_counter() - started) * 1000
        await self.publisher.publish(core.error_outcome(request_id, adapter, version, route_key, latency_ms))

    def _record(self, entry: core.Pending, limits: Limits | None) -> None:
        if not entry.tests:
            self.pending.add(entry)
            return
        entry.state = "judging"
        try:
            self.queue.put_nowait((entry, limits))
        except asyncio.QueueFull:
            entry.state = "done"
            self.stats["judge_dropped"] += 1
            log.warning("judging queue full (%d): request %s gets no outcome", self.gw.judge_queue, entry.request_id)
        self.pending.add(entry)

    async def _judge_worker(self) -> None:
        while True:
            entry, limits = await self.queue.get()
            try:
                event = await self.judge(entry, limits)
                await self.publisher.publish(event)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("judging request %s failed", entry.request_id)
            finally:
                entry.state = "done"
                self.queue.task_done()

    async def judge(self, entry: core.Pending, limits: Limits | None) -> ProductionOutcome:
        tests = entry.tests or []
        results = []
        for text in entry.texts or [""]:
            code = extract_code(text)
            if code is None:
                results.append(core.ChoiceResult("no_code", 0, len(tests)))
                continue
            try:
                j = await asyncio.to_thread(self.deps.judge, code, tests, limits)
                result = core.ChoiceResult(j.verdict, j.passed_tests, j.total_tests)
            except Exception as exc:  # the sandbox failed, not the program
                log.error("sandbox failed judging request %s: %s", entry.request_id, exc)
                result = core.ChoiceResult("sandbox_error", 0, len(tests))
            results.append(result)
            if result.verdict == "passed":
                break
        success, confidence, choice = core.judged_outcome(results)
        self.stats["judged"] += 1
        return entry.outcome(success, confidence, choice)

    async def _housekeeping(self) -> None:
        while True:
            try:
                self.pending.expire(time.monotonic())
                await self.backends.refresh()
                routable = {(t.adapter_name, t.version) for table in list(self.router.tables.values())
                            for t in (table.default, table.candidate) if t is not None and t.version > 0}
                await self.backends.unload_retired(routable)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("gateway housekeeping failed; trying again")
            await asyncio.sleep(self.gw.reconcile_s)


# --------------------------------------------------------------------------- starting it


@dataclass
class RunningGateway:
    gateway: Gateway
    runner: web.AppRunner
    host: str
    port: int
    _close: Any

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def stop(self) -> None:
        await self.runner.cleanup()
        await self._close()


async def _check_sandbox(deps: Deps) -> None:
    """Judge one trivial program before serving: a sandbox that can't run here would otherwise turn
    every judged answer into a failed outcome, silently."""
    from lorafleet.shared.errors import LorafleetError
    from lorafleet.shared.problems import TestCase

    try:
        j = await asyncio.to_thread(deps.judge, "print(1)", [TestCase(kind="stdio", input="", output="1\n")], None)
    except LorafleetError:
        raise
    except Exception as exc:
        raise LorafleetError(f"the sandbox cannot run programs here ({type(exc).__name__}: {exc}): judged outcomes "
                             "need it; see docs/sandbox.md (LORAFLEET_SANDBOX_NAMESPACES=0 runs it with fewer layers)") from exc
    if j.verdict != "passed":
        raise LorafleetError(f"the sandbox failed a trivial program ({j.verdict}: {j.detail}): judged outcomes need it; "
                             "see docs/sandbox.md (LORAFLEET_SANDBOX_NAMESPACES=0 runs it with fewer layers)")


async def _connect_until_up(settings: Settings):
    from lorafleet.shared.bus import connect
    from lorafleet.shared.errors import LorafleetError

    delay = 0.5
    while True:
        try:
            return await connect(settings, name="lorafleet-gateway")
        except LorafleetError as exc:
            log.warning("%s; retrying in %.0f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


async def start_gateway(settings: Settings | None = None, gateway: GatewaySettings | None = None,
                        deps: Deps | None = None) -> RunningGateway:
    """Connect to NATS, follow the registry, listen; returns when requests can be served."""
    from lorafleet.services.registry.settings import RegistrySettings
    from lorafleet.services.registry.store import open_bucket
    from lorafleet.shared.artifacts import open_store
    from lorafleet.shared.bus import ensure_stream

    settings = settings or get_settings()
    deps = deps or bootstrap(settings, gateway)
    gw = deps.gateway
    await _check_sandbox(deps)
    nc = await _connect_until_up(settings)
    session = None
    router = None
    gateway_obj = None
    publisher = None
    try:
        js = nc.jetstream()
        await ensure_stream(js, settings)
        registry = RegistrySettings()
        kv = await open_bucket(js, registry.bucket, history=registry.history, replicas=settings.stream_replicas)
        router = await Router(kv).start(timeout=60)
        artifacts = open_store(settings, js=js)
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300))
        backends = Backends(gw.backends, session, artifacts, deps.adapter_dir, gw.backend_retry_s)
        await backends.refresh()
        publisher = OutcomePublisher(nc, js, Spool.claim(deps.spool_dir, gw.spool_max), gw.publish_timeout_s).start()
        gateway_obj = Gateway(deps, nc, js, router, backends, publisher)
        await gateway_obj.start()
        runner = web.AppRunner(gateway_obj.app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, gw.host, gw.port, backlog=1024)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        # Like every service: /metrics /health /ready on LORAFLEET_METRICS_PORT when set (`lorafleet up`, k8s).
        health = None if settings.metrics_port is None else await start_health_server(
            "gateway", settings.metrics_host, settings.metrics_port, [gateway_obj.not_ready])
    except BaseException:
        await _close_parts(gateway_obj, publisher, router, session, nc)
        raise

    async def close() -> None:
        if health is not None:
            await health.cleanup()
        await _close_parts(gateway_obj, publisher, router, session, nc)

    log.info("gateway listening on http://%s:%d/v1 (backends: %s)", gw.host, port, ", ".join(gw.backends) or "none")
    return RunningGateway(gateway_obj, runner, gw.host, port, close)


async def _close_parts(gateway_obj, publisher, router, session, nc) -> None:
    if gateway_obj is not None:
        await gateway_obj.stop()
        gateway_obj = None
    if publisher is not None and len(publisher.spool) and nc.is_connected:
        try:  # leave nothing in the spool if the bus is there (a pod's emptyDir goes with it)
            await asyncio.wait_for(publisher.drain(), 10.0)
        except Exception as exc:
            log.warning("%d outcome(s) stay in the spool %s (%s): the next start publishes them",
                        len(publisher.spool), publisher.spool.dir, exc)
    for part in (gateway_obj, publisher, router):
        if part is not None:
            try:
                await part.stop()
            except Exception:
                log.exception("stopping %s", type(part).__name__)
    if session is not None:
        await session.close()
    try:
        await nc.drain()
    except Exception:
        pass


def run(settings: Settings | None = None, gateway: GatewaySettings | None = None) -> None:
    """`lorafleet serve gateway`: run until SIGINT/SIGTERM; prints `gateway listening on URL` when ready."""

    async def main() -> None:
        running = await start_gateway(settings, gateway)
        print(f"{READY_LINE} {running.url}", flush=True)
        try:
            await stop_on_signals().wait()
        finally:
            await running.stop()

    try:  # the `gateway` extra: a faster event loop (the same code runs on asyncio's own)
        import uvloop
    except ImportError:
        log.info("uvloop is not installed (pip install 'lorafleet[gateway]'): running on asyncio's event loop")
        asyncio.run(main())
    else:
        uvloop.run(main())


def spawn_gateway(env: dict[str, str] | None = None, timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    """Start `lorafleet serve gateway` in its own process group; (process, base url) once it listens.

    `env` is added to this process's environment (LORAFLEET_NATS_URL, LORAFLEET_GATEWAY_BACKENDS,
    LORAFLEET_GATEWAY_PORT=0 for a free port, ...). Stop it with os.killpg(proc.pid, SIGTERM)."""
    full = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen([sys.executable, "-c", "from lorafleet.cli import main; main()", "serve", "gateway"],
                            env=full, stdout=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            code = proc.wait()
            raise RuntimeError(f"the gateway exited with code {code} before listening (see its stderr)")
        if line.startswith(READY_LINE):
            return proc, line[len(READY_LINE):].strip()
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError(f"the gateway did not listen within {timeout:.0f} s")


def count_request(model: str, target: RouteTarget | None, status: int, latency_ms: float, answer: bytes | None,
                  streamed: bool) -> None:
    """Prometheus: the request by adapter/version/arm (unrouted: the base model, version and arm `-`), its
    latency, and the tokens the backend reported (`usage` of a non-streamed answer)."""
    version, arm = (str(target.version), target.arm) if target is not None else ("-", "-")
    metrics.GATEWAY_REQUESTS.labels("gateway", model, version, arm, str(status)).inc()
    metrics.GATEWAY_SECONDS.labels("gateway", model, version, arm).observe(latency_ms / 1000)
    if answer is not None and not streamed:
        try:
            usage = json.loads(answer).get("usage") or {}
        except ValueError:
            return
        for kind in ("prompt_tokens", "completion_tokens"):
            if isinstance(usage.get(kind), int):
                metrics.GATEWAY_TOKENS.labels("gateway", model, version, arm, kind.removesuffix("_tokens")).inc(usage[kind])
