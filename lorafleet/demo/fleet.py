"""Running the fleet for the demo: the `lorafleet up` supervisor with logs to a file, and a local model server."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.processes import stop_groups

def _free_port() -> int:
    from lorafleet.shared.nats_server import free_port

    return free_port()


class ModelServer:
    """`lorafleet model serve` for the tiny base: the demo's enrich endpoint and the gateway's
    inference backend (the gateway loads each adapter version into it at run time)."""

    def __init__(self, model_dir: Path, log_path: Path, name: str) -> None:
        self.model_dir, self.log_path, self.name = model_dir, log_path, name
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120.0) -> None:
        from lorafleet.up import _die_with_parent

        cmd = [sys.executable, "-c", "from lorafleet.cli import main; main()", "model", "serve", str(self.model_dir),
               "--port", str(self.port), "--name", self.name]
        with open(self.log_path, "ab") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_die_with_parent)
        try:
            wait_healthy(self.url, "model server", timeout, alive=lambda: self.proc.poll() is None)
        except LorafleetError as exc:
            raise LorafleetError(f"{exc}: see {self.log_path}") from None

    def stop(self) -> None:
        stop_groups([self.proc])
        self.proc = None

    def exit_code(self) -> int | None:
        """None while it runs; its exit code once it died."""
        return None if self.proc is None else self.proc.poll()


# ---------------------------------------------------------------- the gateway (issue 17)
# The demo runs the gateway as one more `lorafleet serve gateway` child of the supervisor,
# points it at the model server through its documented settings (docs/gateway.md) and
# sends traffic to its OpenAI-compatible URL.
GATEWAY = "gateway"


def gateway_env(backend_url: str, port: int) -> dict[str, str]:
    """What the gateway process needs (LORAFLEET_GATEWAY_* settings)."""
    return {
        "LORAFLEET_GATEWAY_BACKENDS": backend_url,
        "LORAFLEET_GATEWAY_PORT": str(port),
        "LORAFLEET_GATEWAY_HOST": "127.0.0.1",
        "LORAFLEET_GATEWAY_JUDGE_WORKERS": "1",  # 2 cores: the trainer and the model server need the rest
    }


def gateway_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v1"


def wait_healthy(base_url: str, what: str, timeout: float, alive=lambda: True) -> None:
    """GET <root>/health until 200 (`alive()` False: the process died, stop waiting)."""
    root = base_url.removesuffix("/v1")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise LorafleetError(f"the {what} exited before it answered on {root}")
        try:
            with urllib.request.urlopen(f"{root}/health", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise LorafleetError(f"the {what} did not answer on {root}/health within {timeout:.0f}s")


def _supervisor(settings: Any, log_path: Path):
    """The `lorafleet up` supervisor, with the services' output in a log file instead of the console."""
    from lorafleet import up as cli_up
    from lorafleet.fleet import SERVICES

    class LoggedSupervisor(cli_up.Supervisor):
        def spawn(self, child: Any, url: str) -> None:
            cmd = [sys.executable, "-c", "from lorafleet.cli import main; main()", "serve", child.service]
            with open(log_path, "ab") as fh:
                child.proc = subprocess.Popen(cmd, env=self.child_env(child, url), stdout=fh, stderr=subprocess.STDOUT,
                                              start_new_session=True, preexec_fn=cli_up._die_with_parent)
            self.started(child)

    # Two evaluator replicas share the evaluation's shards (the other services wait on it then).
    replicas = {s: 2 if s == "evaluator" else 1 for s in SERVICES}
    replicas.setdefault(GATEWAY, 1)  # the demo needs it even where `lorafleet up` would not start it
    return LoggedSupervisor(settings, replicas)

