"""`lorafleet registry ...` against a real nats-server: every command, and bad input as one clear line."""

import asyncio
import json
import subprocess
import sys

import nats
import pytest
from registry_helpers import INFO, NOW, evaluated

from lorafleet.services.registry import core
from lorafleet.services.registry.settings import RegistrySettings
from lorafleet.services.registry.store import RegistryStore
from lorafleet.shared.bus import ensure_stream
from lorafleet.cli import main
from lorafleet.shared.settings import Settings


def seed(url: str) -> None:
    async def run():
        nc = await nats.connect(url)
        js = nc.jetstream()
        await ensure_stream(js, Settings(nats_url=url))
        store = await RegistryStore.open(js)
        s = RegistrySettings()
        await store.apply("py", lambda st: core.register(st, evaluated(name="py", version=1), INFO, 1, NOW, s))
        await store.apply("py", lambda st: core.register(st, evaluated(name="py", version=2, passed=False), INFO, None, NOW, s))
        await store.apply("py", lambda st: core.register(st, evaluated(name="py", version=3), INFO, 3, NOW, s))
        await nc.close()

    asyncio.run(run())


def snapshot(url: str) -> dict:
    async def run():
        nc = await nats.connect(url)
        state, _ = await (await RegistryStore.open(nc.jetstream())).get("py")
        await nc.close()
        return state.model_dump(mode="json")

    return asyncio.run(run())


def cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.fixture
def url(nats_url, monkeypatch):
    monkeypatch.setenv("LORAFLEET_NATS_URL", nats_url)
    seed(nats_url)
    return nats_url


def test_commands(url, capsys):
    code, out, _ = cli(capsys, "registry", "list", "--json")
    assert code == 0 and json.loads(out)[0]["ab"]["candidate"] == 3
    code, out, _ = cli(capsys, "registry", "ab", "py", "--traffic", "0.2")
    assert code == 0 and "v3 gets 20%" in out
    code, out, _ = cli(capsys, "registry", "promote", "py")
    assert code == 0 and "v3 is active" in out
    code, out, _ = cli(capsys, "registry", "promote", "py", "1")
    assert code == 0 and "v1 is active (v3 retired)" in out
    code, out, _ = cli(capsys, "registry", "rollback", "py")
    assert code == 0 and "v3 is active" in out
    code, out, _ = cli(capsys, "registry", "show", "py", "--json")
    data = json.loads(out)
    assert data["active"] == 3 and data["versions"]["2"]["status"] == "rejected"
    assert cli(capsys, "registry", "show", "py")[0] == 0
    assert cli(capsys, "registry", "list")[0] == 0
    code, out, _ = cli(capsys, "registry", "history", "py")
    assert code == 0 and "rolled_back" in out and "promoted" in out
    code, out, _ = cli(capsys, "registry", "retrain-status", "--json")
    row = json.loads(out)[0]
    assert code == 0 and row["pool_size"] == 0 and row["next_scheduled"] > "2026"


@pytest.mark.parametrize("args, message", [
    (("promote", "py", "9"), "py has no version 9 (known versions: 1, 2, 3)"),
    (("promote", "py", "2"), "v2 was rejected by the gate"),
    (("promote", "ghost"), "unknown adapter 'ghost'"),
    (("rollback", "py"), "no active version to roll back"),
    (("ab", "py", "--traffic", "1.5"), "out of range"),
    (("show", "ghost"), "unknown adapter 'ghost'"),
])
def test_bad_input_is_one_line_and_changes_nothing(url, capsys, args, message):
    before = snapshot(url)
    code, _, err = cli(capsys, "registry", *args)
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert snapshot(url) == before


def test_no_predecessor(url, capsys):
    assert cli(capsys, "registry", "promote", "py", "1")[0] == 0
    code, _, err = cli(capsys, "registry", "rollback", "py")
    assert code == 2 and "v1 has no predecessor" in err


def test_installed_command_runs(url):
    proc = subprocess.run([sys.executable, "-m", "lorafleet.cli", "registry", "rollback", "ghost"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown adapter 'ghost'" in proc.stderr
