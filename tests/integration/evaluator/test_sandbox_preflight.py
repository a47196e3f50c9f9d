"""The evaluator refuses to start where its sandbox could only run generated code in the reduced mode
(here: namespaces turned off, as in a container that forbids them), unless that mode is opted into."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
START = "from lorafleet.services.evaluator.bootstrap import bootstrap\nfrom lorafleet.shared.settings import Settings\nbootstrap(Settings())\nprint('started')\n"


def start(tmp_path, **env):
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LORAFLEET_DATA_DIR": str(tmp_path),
            "LORAFLEET_CACHE_DIR": os.environ.get("LORAFLEET_CACHE_DIR", str(Path.home() / ".cache" / "lorafleet")),
            "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-c", START], capture_output=True, text=True, timeout=120, env=full, check=False)


def test_the_evaluator_refuses_to_start_with_only_the_reduced_mode(tmp_path):
    out = start(tmp_path, LORAFLEET_SANDBOX_NAMESPACES="0")
    assert out.returncode != 0 and "started" not in out.stdout
    assert "IsolationUnavailable" in out.stderr and "LORAFLEET_SANDBOX_ALLOW_REDUCED=1" in out.stderr, out.stderr[-1500:]


def test_the_evaluator_starts_in_the_reduced_mode_when_opted_in(tmp_path):
    out = start(tmp_path, LORAFLEET_SANDBOX_NAMESPACES="0", LORAFLEET_SANDBOX_ALLOW_REDUCED="1")
    assert out.returncode == 0 and "started" in out.stdout, out.stderr[-1500:]


def test_the_evaluator_starts_with_full_isolation(tmp_path):
    out = start(tmp_path)
    assert out.returncode == 0 and "started" in out.stdout, out.stderr[-1500:]
