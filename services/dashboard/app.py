"""`lorafleet serve dashboard`: the web dashboard as a service the supervisor, compose and k8s run like any other.

It consumes nothing (no durable consumer): it reads the stream, the registry's KV, the
consumers' state and the artifact store on demand, and follows new events with a core
subscription for the live feed.
"""

from __future__ import annotations

import asyncio
import logging

from lorafleet.shared.processes import stop_on_signals
from lorafleet.shared.service import Service
from lorafleet.shared.settings import Settings, get_settings
from lorafleet.shared.telemetry.health import start_health_server

from .settings import DashboardSettings

log = logging.getLogger("lorafleet.dashboard")


class DashboardService(Service):
    """A `Service` for `load_service`/`serve`, whose run() is an HTTP server instead of a bus consumer."""

    async def run(self, settings: Settings | None = None, stop: asyncio.Event | None = None) -> None:
        from .reader import Reader
        from .web import serve

        settings = settings or get_settings()
        dash = DashboardSettings()
        stop = stop_on_signals(stop)

        def ready(host: str, port: int) -> None:
            shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
            mode = "actions enabled (token set)" if dash.token else "read-only (set LORAFLEET_DASHBOARD_TOKEN for actions)"
            # Printed, not only logged: `lorafleet demo` and tests read the address from here.
            print(f"dashboard on http://{shown}:{port}/ ({mode})", flush=True)

        reader = Reader(settings, dash)
        # Like every service: /metrics /health /ready on LORAFLEET_METRICS_PORT when set (`lorafleet up`, k8s).
        health = None if settings.metrics_port is None else await start_health_server(
            "dashboard", settings.metrics_host, settings.metrics_port,
            [lambda: None if reader.connected else "not connected to NATS (the page says so and retries)"])
        try:
            await serve(reader, dash.host, dash.port, dash.token, stop, on_ready=ready)
        finally:
            if health is not None:
                await health.cleanup()


service = DashboardService("dashboard")
