"""The CLI's user-facing errors and the schema export (no NATS server needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jsonschema
import pytest

LORAFLEET = [sys.executable, "-c", "from lorafleet.cli import main; main()"]


def run(*args: str, cwd, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LORAFLEET_")}
    return subprocess.run([*LORAFLEET, *args], cwd=cwd, env=base | env, capture_output=True, text=True, timeout=120)


def test_help_lists_root_commands_and_groups(tmp_path):
    out = run("--help", cwd=tmp_path)
    assert out.returncode == 0
    for name in ("up", "serve", "status", "events", "data", "model", "adapter", "eval", "registry", "sandbox"):
        assert name in out.stdout


def test_user_errors_are_one_line_without_traceback(tmp_path, monkeypatch, capsys):
    from lorafleet import cli

    cases = [
        (("status",), {}, "run `lorafleet up`"),
        (("status",), {"LORAFLEET_NATS_URL": "http://nope"}, "is not a NATS URL"),
        (("--nats-url", "nats://127.0.0.1:1", "status"), {}, "cannot reach NATS at nats://127.0.0.1:1"),
        (("serve", "nosuch"), {}, "unknown service 'nosuch'"),
        (("up", "--service", "nosuch"), {}, "unknown service(s) nosuch"),
    ]
    monkeypatch.chdir(tmp_path)
    for args, env, expected in cases:
        for key in ("LORAFLEET_NATS_URL", "LORAFLEET_DATA_DIR", "LORAFLEET_DEBUG"):
            monkeypatch.setenv(key, env.get(key, ""))  # restored after the test, whatever the CLI sets
        with pytest.raises(SystemExit) as exit_info:
            cli.main(list(args))
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert exit_info.value.code == 2, (args, err)
        assert lines and lines[-1].startswith("lorafleet: error:") and expected in lines[-1], (args, err)
        assert "Traceback" not in err
    monkeypatch.setenv("LORAFLEET_NATS_URL", "")
    debug = run("--debug", "serve", "nosuch", cwd=tmp_path)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_events_schema_writes_valid_json_schemas(tmp_path):
    out = run("events", "schema", "--out", str(tmp_path / "schemas"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    files = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "schemas").glob("*.json")}
    assert {"train.requested", "production.outcome", "training.failed", "adapter.promoted"} <= set(files)
    schema = files["production.outcome"]
    assert schema["x-subject"] == "lorafleet.v1.production.outcome"
    jsonschema.Draft202012Validator.check_schema(schema)
    good = {"request_id": "r", "adapter_name": "python-lora", "version": 3, "request_key": "k",
            "success": True, "confidence": 0.95, "latency_ms": 120.0}
    jsonschema.validate(good, schema)
    bad = good | {"confidence": 1.5}
    try:
        jsonschema.validate(bad, schema)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("confidence above 1 must be rejected by the schema")


def test_a_broken_area_cli_is_reported_not_skipped(monkeypatch, capsys):
    from lorafleet import cli

    monkeypatch.setattr(cli, "AREA_CLIS", ("lorafleet.services.nosuch.cli",))
    monkeypatch.setattr(cli, "load_errors", [])
    cli.mount_area_clis()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    err = capsys.readouterr().err
    assert "lorafleet.services.nosuch.cli are unavailable (ModuleNotFoundError" in err
