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
    """`lorafleet model serve` for the tiny base, as the demo's enrich endpoint."""

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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LorafleetError(f"the model server exited with code {self.proc.returncode}: see {self.log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise LorafleetError(f"the model server did not answer on port {self.port} within {timeout:.0f}s: see {self.log_path}")

    def stop(self) -> None:
        stop_groups([self.proc])
        self.proc = None


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
    return LoggedSupervisor(settings, {s: 2 if s == "evaluator" else 1 for s in SERVICES})

