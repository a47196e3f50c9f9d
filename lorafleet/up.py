"""`lorafleet up`: the embedded nats-server plus every service as a child process.

Each child (`lorafleet serve NAME`) runs in its own process group, so stopping
one never touches anything else, and dies with this process (PR_SET_PDEATHSIG)
even if this one is SIGKILLed. A child that crashes is restarted with backoff;
one that keeps crashing is given up on, loudly.
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
from dataclasses import dataclass, field
from pathlib import Path

from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.settings import Settings

log = logging.getLogger("lorafleet.up")

STOP_TIMEOUT_S = 20.0
MAX_RESTARTS = 5  # within RESTART_WINDOW_S
RESTART_WINDOW_S = 120.0


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGTERM it when `lorafleet up` dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


@dataclass
class Child:
    service: str
    replica: int
    proc: subprocess.Popen | None = None
    starts: list[float] = field(default_factory=list)
    next_start: float = 0.0
    given_up: bool = False
    metrics_port: int | None = None

    @property
    def label(self) -> str:
        return f"{self.service}#{self.replica}"


class Supervisor:
    def __init__(self, settings: Settings, replicas: dict[str, int]) -> None:
        self.settings = settings
        self.children = [Child(s, i) for s, n in replicas.items() for i in range(n)]
        self.server = None
        self.stopping = False

    # ----------------------------------------------------------------- server

    def start_server(self) -> str:
        if self.settings.nats_servers():
            return self.settings.nats_url or ""
        from lorafleet.shared.nats_server import NatsServer, port_is_free, read_embedded_url, write_embedded_url

        data_dir = self.settings.data_dir.resolve()
        running = read_embedded_url(data_dir)
        if running:
            raise LorafleetError(
                f"an embedded nats-server for {data_dir} is already running at {running}: "
                "stop that `lorafleet up` first, or use another --data-dir"
            )
        port = self.settings.embedded_port if self.settings.embedded_port and port_is_free(self.settings.embedded_port) else 0
        monitor = 8222 if port_is_free(8222) else 0
        self.server = NatsServer(store_dir=data_dir / "nats", port=port, monitor_port=monitor, die_with_parent=True)
        self.server.start()
        write_embedded_url(data_dir, self.server.url, self.server.proc.pid)
        log.info("embedded nats-server %s (monitoring %s, store %s)", self.server.url, self.server.monitor_url, data_dir / "nats")
        return self.server.url

    # ----------------------------------------------------------------- children

    def child_env(self, child: Child, url: str) -> dict[str, str]:
        """A child's environment; each process gets its own free metrics port (a new one at every restart)."""
        from lorafleet.shared.nats_server import free_port

        child.metrics_port = free_port()
        env = dict(os.environ, LORAFLEET_NATS_URL=url, LORAFLEET_DATA_DIR=str(self.settings.data_dir.resolve()),
                   LORAFLEET_METRICS_PORT=str(child.metrics_port), PYTHONUNBUFFERED="1")
        base_port = os.environ.get("LORAFLEET_GATEWAY_PORT", "8400")
        if child.service == "gateway" and child.replica and base_port.isdigit() and int(base_port):
            env["LORAFLEET_GATEWAY_PORT"] = str(int(base_port) + child.replica)  # --scale gateway=N: 8400, 8401, ...
        return env

    def spawn(self, child: Child, url: str) -> None:
        cmd = [sys.executable, "-c", "from lorafleet.cli import main; main()", "serve", child.service]
        child.proc = subprocess.Popen(cmd, env=self.child_env(child, url), start_new_session=True,
                                      preexec_fn=_die_with_parent)
        self.started(child)
        log.info("started %s (pid %d, metrics http://127.0.0.1:%d/metrics)", child.label, child.proc.pid, child.metrics_port)

    def started(self, child: Child) -> None:
        child.starts = [t for t in child.starts if t > time.monotonic() - RESTART_WINDOW_S] + [time.monotonic()]
        write_processes(self.settings.data_dir.resolve(), self.children)

    def check(self, url: str) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.given_up:
                continue
            if child.proc is not None and child.proc.poll() is None:
                continue
            if child.proc is not None:
                code, child.proc = child.proc.returncode, None
                if len(child.starts) >= MAX_RESTARTS:
                    child.given_up = True
                    log.error("%s exited with code %d %d times in %.0f s: not restarting it (see its log above)",
                              child.label, code, len(child.starts), RESTART_WINDOW_S)
                    continue
                child.next_start = now + min(2.0 ** len(child.starts), 30.0)
                log.warning("%s exited with code %d; restarting in %.0f s", child.label, code, child.next_start - now)
            if now >= child.next_start:
                self.spawn(child, url)

    def stop_children(self, services: set[str] | None = None, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop every child, or those of `services`; a later check() starts the latter again."""
        live = [c for c in self.children if c.proc is not None and c.proc.poll() is None
                and (services is None or c.service in services)]
        for child in live:
            _signal_group(child.proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in live:
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s: killing it", child.label, timeout_s)
        for child in live:
            # The whole group: a service's own children (sandbox runs, data loaders) go too.
            _signal_group(child.proc, signal.SIGKILL)
            child.proc.wait()
            if services is not None:
                child.proc = None  # stopped on purpose: check() starts it again without counting a crash

    # ----------------------------------------------------------------- run

    def run(self) -> None:
        def request_stop(signum: int, _frame: object) -> None:
            if not self.stopping:
                log.info("stopping (%s)...", signal.Signals(signum).name)
            self.stopping = True

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            url = self.start_server()
            from lorafleet.shared.bus import ensure_infrastructure

            asyncio.run(ensure_infrastructure(self.settings.model_copy(update={"nats_url": url})))
            log.info("lorafleet is up on %s with %s; Ctrl-C stops everything", url,
                     ", ".join(c.label for c in self.children) or "no services")
            while not self.stopping:
                self.check(url)
                if self.server is not None and self.server.proc is not None and self.server.proc.poll() is not None:
                    raise LorafleetError(f"the embedded nats-server exited (code {self.server.proc.returncode}); "
                                         f"see {self.server.store_dir}/nats-server-{self.server.port}.log")
                time.sleep(0.2)
        finally:
            self.stop_children()
            if self.server is not None:
                from lorafleet.shared.nats_server import clear_embedded_url

                self.server.stop()
                clear_embedded_url(self.settings.data_dir.resolve())
            (self.settings.data_dir.resolve() / PROCESSES_FILE).unlink(missing_ok=True)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            log.info("stopped")


PROCESSES_FILE = "processes.json"


def write_processes(data_dir: Path, children: list[Child]) -> None:
    """What `lorafleet status` lists: each running process, its pid and its metrics URL (temp name, then rename)."""
    rows = [{"service": c.service, "replica": c.replica, "pid": c.proc.pid,
             "metrics_url": f"http://{_metrics_host()}:{c.metrics_port}/metrics" if c.metrics_port else None}
            for c in children if c.proc is not None]
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".{PROCESSES_FILE}.tmp"
    tmp.write_text(json.dumps({"supervisor_pid": os.getpid(), "processes": rows}, indent=1))
    tmp.replace(data_dir / PROCESSES_FILE)


def read_processes(data_dir: Path) -> list[dict]:
    """The processes of a `lorafleet up` that is still running for `data_dir`, else []."""
    try:
        state = json.loads((data_dir / PROCESSES_FILE).read_text())
        os.kill(int(state["supervisor_pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return list(state.get("processes", []))


def _metrics_host() -> str:
    host = os.environ.get("LORAFLEET_METRICS_HOST", "127.0.0.1")
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # its own session: pgid == pid
    except (ProcessLookupError, PermissionError):
        pass
