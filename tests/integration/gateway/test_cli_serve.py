"""`lorafleet serve gateway` as a process: listens, answers, stops on SIGTERM; a bad setting is one clear line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

from lorafleet.services.gateway.app import spawn_gateway
from lorafleet.shared.nats_server import free_port


def test_serve_gateway_process(nats_url, tmp_path):
    port = free_port()
    proc, url = spawn_gateway({"LORAFLEET_NATS_URL": nats_url, "LORAFLEET_DATA_DIR": str(tmp_path),
                               "LORAFLEET_GATEWAY_PORT": str(port)})
    try:
        assert url == f"http://127.0.0.1:{port}/v1"
        with urllib.request.urlopen(url + "/models", timeout=10) as r:
            assert json.load(r) == {"object": "list", "data": []}
        with urllib.request.urlopen(url.removesuffix("/v1") + "/health", timeout=10) as r:
            assert json.load(r)["status"] == "ok"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0


def test_bad_gateway_setting_is_one_line(nats_url, tmp_path):
    out = subprocess.run([sys.executable, "-m", "lorafleet.cli", "serve", "gateway", "--port", "0"],
                         env={**os.environ, "LORAFLEET_NATS_URL": nats_url, "LORAFLEET_GATEWAY_BACKENDS": "ftp://x"},
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2 and "LORAFLEET_GATEWAY_BACKENDS" in out.stderr and "http://127.0.0.1:8000/v1" in out.stderr
    assert "Traceback" not in out.stderr
