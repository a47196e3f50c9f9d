"""`lorafleet demo` leaves no process behind when it is interrupted mid-run (Ctrl-C)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CONFIG = Path(__file__).resolve().parents[1] / "fixtures" / "demo" / "tiny_demo.yaml"


def _tree(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_ctrl_c_mid_run_stops_every_process_it_started(tmp_path):
    out = tmp_path / "demo.out"
    env = {**os.environ, "COLUMNS": "160", "PYTHONUNBUFFERED": "1"}
    env.pop("LORAFLEET_NATS_URL", None)
    with open(out, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from lorafleet.cli import main; main()", "demo", "--config", str(CONFIG),
             "--data-dir", str(tmp_path / "demo")],
            stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    children: dict[int, psutil.Process] = {}
    try:
        deadline = time.monotonic() + 180
        while "dataset.ready" not in out.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, out.read_text()
            for child in _tree(proc.pid):
                children.setdefault(child.pid, child)
            time.sleep(0.2)
        assert "dataset.ready" in out.read_text(), out.read_text()
        for child in _tree(proc.pid):
            children.setdefault(child.pid, child)
        names = " ".join(" ".join(c.cmdline()) for c in children.values() if c.is_running())
        # NATS, the five services and the model server were all running.
        assert "nats-server" in names and "model serve" in names
        for service in ("ingest", "enrich", "trainer", "evaluator", "registry"):
            assert f"serve {service}" in names, names
        os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the foreground process
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    time.sleep(0.5)
    left = [c for c in children.values() if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert left == [], [" ".join(c.cmdline()) for c in left]
    text = out.read_text()
    assert "stopped the services, the model server and NATS" in text, text
