"""/metrics, /health and /ready on a small HTTP port, one per process (LORAFLEET_METRICS_PORT).

/health: the process is alive (its event loop answers). /ready: it can do its job now: each
readiness check (connected to NATS, consumer bound, its own dependencies) returns None when fine
or a short reason; the reasons come back in the 503 body.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from lorafleet.shared.errors import LorafleetError

ReadinessCheck = Callable[[], "str | None"]


def health_app(service: str, checks: list[ReadinessCheck]) -> web.Application:
    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"service": service, "status": "alive"})

    async def ready(_request: web.Request) -> web.Response:
        problems = [p for p in (check() for check in checks) if p]
        body = {"service": service, "ready": not problems, "problems": problems}
        return web.Response(text=json.dumps(body), status=503 if problems else 200, content_type="application/json")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    return app


async def start_health_server(service: str, host: str, port: int, checks: list[ReadinessCheck]) -> web.AppRunner:
    """Serve until the returned runner is cleaned up; a port already taken is a clear error."""
    runner = web.AppRunner(health_app(service, checks), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            raise LorafleetError(f"{service}: metrics port {host}:{port} is already taken: set LORAFLEET_METRICS_PORT "
                                 "to a free port (or 0 for any free port)") from None
        raise LorafleetError(f"{service}: cannot serve metrics on {host}:{port}: {exc}") from None
    return runner


def bound_port(runner: web.AppRunner) -> int:
    return runner.addresses[0][1]
