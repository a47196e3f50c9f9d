"""`lorafleet up` with no URL, `lorafleet status` from another process, then Ctrl-C: nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from lorafleet.fleet import WEB_SERVICES, SERVICES

LORAFLEET = [sys.executable, "-c", "from lorafleet.cli import main; main()"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORAFLEET_")}
    # Port 0: any free port, so parallel runs and a developer's own `lorafleet up` never collide.
    return env | {"LORAFLEET_EMBEDDED_PORT": "0"} | extra


def _get_status(url: str, deadline: float) -> int | None:
    import urllib.error
    import urllib.request

    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    return None


def test_up_status_and_ctrl_c_leave_no_process(tmp_path: Path):
    workdir = tmp_path / "elsewhere"  # not the repo: the command must work from any directory
    workdir.mkdir()
    log = open(tmp_path / "up.log", "wb")
    from lorafleet.shared.nats_server import free_port

    gateway_port = free_port()  # the gateway (an HTTP service) listens here, not on the default 8400
    up = subprocess.Popen([*LORAFLEET, "up"], cwd=workdir, env=clean_env(LORAFLEET_GATEWAY_PORT=str(gateway_port),
                                                                         LORAFLEET_DASHBOARD_PORT=str(free_port())),
                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    family: set[psutil.Process] = set()
    try:
        deadline, report = time.monotonic() + 120, None
        while time.monotonic() < deadline:
            assert up.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
            family |= set(psutil.Process(up.pid).children(recursive=True))
            status = subprocess.run([*LORAFLEET, "status", "--json"], cwd=workdir, env=clean_env(),
                                    capture_output=True, text=True, timeout=60)
            if status.returncode == 0:
                report = json.loads(status.stdout)
                if all(r["consumer"] and r["waiting_pulls"] >= 1 for r in report["services"] if r["service"] in SERVICES) \
                        and len(report["processes"]) == len(SERVICES + WEB_SERVICES) and all(p["ready"] for p in report["processes"]):
                    break
            time.sleep(1)
        else:
            raise AssertionError(f"services did not come up; last status: {report}\n"
                                 + (tmp_path / "up.log").read_text()[-3000:])
        family |= set(psutil.Process(up.pid).children(recursive=True))
        state = json.loads((workdir / ".lorafleet" / "embedded-nats.json").read_text())
        assert report["servers"] == [state["url"]]
        names = " ".join(" ".join(p.cmdline()) for p in family)
        assert "nats-server" in names and all(f"serve {s}" in names for s in SERVICES)
        # Each process has its own metrics port, and it serves Prometheus text there.
        urls = {p["service"]: p["metrics_url"] for p in report["processes"]}
        assert set(urls) == set(SERVICES + WEB_SERVICES) and len(set(urls.values())) == len(SERVICES + WEB_SERVICES)
        for url in urls.values():
            with urllib.request.urlopen(url, timeout=5) as resp:
                assert b"lorafleet_events_handled_total" in resp.read()
        assert "serve gateway" in names
        assert _get_status(f"http://127.0.0.1:{gateway_port}/health", time.monotonic() + 60) == 200

        os.killpg(up.pid, signal.SIGINT)  # what Ctrl-C sends to the foreground process group
        assert up.wait(timeout=60) == 0, (tmp_path / "up.log").read_text()[-3000:]
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
        log.close()
    alive = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left behind: {[p.cmdline() for p in alive]}"
    assert not (workdir / ".lorafleet" / "embedded-nats.json").exists()
    assert not (workdir / ".lorafleet" / "processes.json").exists()
    after = subprocess.run([*LORAFLEET, "status"], cwd=workdir, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert after.returncode == 2 and "lorafleet up" in after.stderr and "Traceback" not in after.stderr
