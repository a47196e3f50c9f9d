"""The dashboard beside the demo: started with the fleet, its address printed first; `--stay` keeps
everything running after the summary until Ctrl-C."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.processes import stop_groups


class DemoDashboard:
    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, nats_url: str, timeout: float = 60.0) -> str:
        from lorafleet.shared.nats_server import port_is_free
        from lorafleet.up import _die_with_parent

        wanted = int(os.environ.get("LORAFLEET_DASHBOARD_PORT", "8300"))
        port = wanted if wanted and port_is_free(wanted) else 0  # a `lorafleet up` may hold 8300
        env = dict(os.environ, LORAFLEET_NATS_URL=nats_url, PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-c", "from lorafleet.cli import main; main()", "serve", "dashboard", "--port", str(port)]
        with open(self.log_path, "ab") as fh:
            self.proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"dashboard on (http://\S+)", self.log_path.read_text(errors="replace"))
            if found:
                self.url = found.group(1)
                return self.url
            if self.proc.poll() is not None:
                raise LorafleetError(f"the dashboard exited with code {self.proc.returncode}: see {self.log_path}")
            time.sleep(0.2)
        raise LorafleetError(f"the dashboard did not start within {timeout:.0f}s: see {self.log_path}")

    def stay(self, say: Any, sup: Any, url: str) -> None:
        """Keep the fleet (restarting crashed services) and the dashboard up until Ctrl-C."""
        say(f"[bold]--stay[/bold]: the fleet and the dashboard keep running at [bold]{self.url}[/bold]; Ctrl-C stops everything")
        try:
            while True:
                sup.check(url)
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass

    def stop(self) -> None:
        stop_groups([self.proc])
        self.proc = None
