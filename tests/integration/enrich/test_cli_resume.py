"""`lorafleet data enrich` as a real process: SIGKILL in the middle, restart, only the missing prompts are asked."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys

from lorafleet.services.enrich import core
from lorafleet.shared.config import EnrichSection


def cli(data_dir, *args) -> list[str]:
    return [sys.executable, "-m", "lorafleet.cli", "--data-dir", str(data_dir), "data", "enrich", *map(str, args)]


async def run(cmd) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_kill_and_restart_asks_only_for_the_missing(chat_server, example_factory, dataset_writer, tmp_path):
    chat_server.latency_s = 0.05
    examples = [example_factory(i) for i in range(160)]
    src = dataset_writer(tmp_path / "ds", examples)
    out = tmp_path / "out"
    cmd = cli(tmp_path / "data", src, "--endpoint", chat_server.url, "--model", "reasoner", "--concurrency", "4", "--out", out)

    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    for _ in range(600):
        if chat_server.total_requests >= 80 or proc.returncode is not None:
            break
        await asyncio.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    await proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []

    with sqlite3.connect(tmp_path / "data" / "enrich" / "cache.sqlite") as db:
        cached = {row[0] for row in db.execute("SELECT key FROM answers")}
    assert 20 <= len(cached) < 160  # commits come in groups: the last fraction of a second is lost
    cfg = EnrichSection()
    keys = [core.make_request(e, "reasoner", cfg).key for e in examples]
    pids = [chat_server.prompt_id(core.build_messages(e)) for e in examples]
    asked_before = dict(chat_server.requests_by_prompt)

    code, stdout, stderr = await run(cmd)
    assert code == 0, stderr
    stats = json.loads(stdout)
    assert stats["cached"] == len(cached) and stats["generated"] == 160 - len(cached)
    assert stats["requests"] == 160 - len(cached)
    for key, pid in zip(keys, pids):
        new_requests = chat_server.requests_by_prompt[pid] - asked_before.get(pid, 0)
        assert new_requests == (0 if key in cached else 1)
    lines = (out / "train.jsonl").read_text().splitlines()
    assert len(lines) == 160 and all(json.loads(line)["reasoning"] for line in lines)


async def test_cli_errors_are_one_line_and_leave_nothing(chat_server, example_factory, dataset_writer, tmp_path):
    chat_server.api_key = "right"
    src = dataset_writer(tmp_path / "ds", [example_factory(i) for i in range(3)])
    out = tmp_path / "out"
    code, _, stderr = await run(cli(tmp_path / "data", src, "--endpoint", chat_server.url, "--model", "reasoner", "--out", out))
    assert code == 2
    assert f"endpoint {chat_server.url}" in stderr and "refused the API key" in stderr and "Traceback" not in stderr
    assert not out.exists()

    code, _, stderr = await run(cli(tmp_path / "data", tmp_path / "nowhere", "--endpoint", chat_server.url, "--model", "m"))
    assert code == 2 and "dataset directory" in stderr and "not found" in stderr


async def test_cli_without_endpoint_passes_through(example_factory, dataset_writer, tmp_path):
    src = dataset_writer(tmp_path / "ds", [example_factory(1)])
    env_free = {k: v for k, v in os.environ.items() if not k.startswith("LORAFLEET_ENRICH_")}
    proc = await asyncio.create_subprocess_exec(*cli(tmp_path / "data", src), env=env_free,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()
    assert json.loads(stdout)["skipped"] is True
    assert (tmp_path / "ds-enriched" / "train.jsonl").read_text() == (src / "train.jsonl").read_text()
