"""`lorafleet data import` / `data build` as a user runs them (a real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lorafleet.services.ingest.sources.humaneval import default_path

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "ingest"


def lorafleet(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from lorafleet.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120, cwd=cwd)


def test_import_humaneval_verifies_all_164(tmp_path):
    out = tmp_path / "ds"
    r = lorafleet("data", "import", "--source", "humaneval", "--path", default_path(), "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["problems"] == 164 and report["solutions"] == 164 and report["verified"] == 164
    assert report["rejected"] == {} and report["malformed"] == {}
    for key in ("duplicates_removed", "decontaminated", "train", "eval", "by_domain", "by_source"):
        assert key in report
    assert report["train"] + report["eval"] == 164 and report["by_source"] == {"humaneval": 164}
    assert sum(1 for _ in (out / "train.jsonl").open()) == report["train"]


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    r = lorafleet("data", "import", "--source", "appz", "--path", "x.jsonl")
    assert r.returncode == 2 and "unknown source 'appz'; allowed: codecontests, apps" in r.stderr
    r = lorafleet("data", "import", "--source", "apps", "--path", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "ds"))
    assert r.returncode == 2 and "none.jsonl not found" in r.stderr and not (tmp_path / "ds").exists()
    cfg = tmp_path / "c.yaml"
    cfg.write_text("adapter_name: x\nbase_model: tiny\ndata:\n  sources:\n    - type: appps\n      path: a.jsonl\n")
    r = lorafleet("data", "build", str(cfg), "--out", str(tmp_path / "ds"))
    assert r.returncode == 2 and "data.sources.0.type" in r.stderr and "'codecontests'" in r.stderr
    assert not (tmp_path / "ds").exists()


def test_build_config(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "adapter_name: math-lora\nbase_model: tiny\ndata:\n  domains: [math, algorithms]\n  min_examples: 1\n"
        f"  sources:\n    - {{type: codecontests, path: '{FIXTURES / 'codecontests.parquet'}'}}\n"
        f"    - {{type: taco, path: '{FIXTURES / 'taco'}', limit: 1}}\n"
    )
    r = lorafleet("data", "build", str(cfg), "--out", str(tmp_path / "ds"), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["sources"]["taco"]["problems"] == 1  # the per-source limit
    assert set(report["by_domain"]) <= {"math", "algorithms", "data_structures", "python"}
    assert report["train"] >= 1 and (tmp_path / "ds" / "manifest.json").exists()
