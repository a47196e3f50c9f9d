"""Helpers for the dashboard tests: a dashboard in-process or as a process, registry state made by the
registry's own code, and real events on the bus."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp

from lorafleet.shared.bus import publish_event
from lorafleet.shared.config import TrainConfig
from lorafleet.shared.events import AdapterEvaluated, GateCriterion, ProductionOutcome

LORAFLEET = [sys.executable, "-c", "from lorafleet.cli import main; main()"]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    """The system browser; missing is an error (make setup installs it), never a skip."""
    path = os.environ.get("LORAFLEET_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise AssertionError("chromium is not installed: run `make setup` (apt-get install -y chromium)")
    return path


def write_adapter(path: Path, name: str, rank: int = 8) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": ["q_proj", "v_proj"],
        "base_model_name_or_path": "tiny-base", "task_type": "CAUSAL_LM"}))
    (path / "adapter_model.safetensors").write_bytes(os.urandom(2048))
    config = TrainConfig(adapter_name=name, base_model="tiny-base").model_dump(mode="json")
    (path / "training_summary.json").write_text(json.dumps({"config": config}))
    return path


async def register_version(js, artifacts, tmp: Path, name: str, version: int, passed: bool = True,
                           ref=None) -> AdapterEvaluated:
    """An adapter.evaluated for an adapter artifact (a fresh one unless `ref`); the registry service registers
    or rejects it."""
    if ref is None:
        ref = await artifacts.put_dir(write_adapter(tmp / f"{name}-v{version}", name), f"adapters/{name}/v{version}")
    event = AdapterEvaluated(
        request_id=f"train-{name}-{version}", adapter_name=name, version=version, adapter=ref, base_model="tiny-base",
        rank=8, target_modules=["q_proj", "v_proj"], gate_passed=passed, domains=["python"],
        gate=[GateCriterion(name="delta_pass@1", measured=0.3 if passed else 0.0, threshold=0.05, comparison=">=",
                            passed=passed)],
        metrics={"adapter": {"pass@1": 0.4}, "base": {"pass@1": 0.1},
                 "delta_pass@1": {"mean": 0.3, "low": 0.1, "high": 0.5, "confidence": 0.95, "problems": 10}})
    await publish_event(js, event)
    return event


async def send_outcomes(js, name: str, arms: dict[int, float], n: int, seed: int = 0, prefix: str = "o") -> None:
    """`n` production outcomes split evenly over the arms {version: success rate}."""
    rnd = random.Random(seed)
    versions = list(arms)
    for i in range(n):
        v = versions[i % len(versions)]
        await publish_event(js, ProductionOutcome(
            request_id=f"{prefix}-{seed}-{i}", adapter_name=name, version=v, request_key=f"user-{i}",
            success=rnd.random() < arms[v], confidence=0.95, latency_ms=rnd.uniform(20, 60)))


async def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = None
    while loop.time() < deadline:
        last = await predicate()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


def cli_json(nats_url: str, *args: str) -> dict:
    """`lorafleet ... --json` as a user runs it."""
    out = subprocess.run([*LORAFLEET, "--nats-url", nats_url, *args, "--json"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


class DashboardProcess:
    """`lorafleet serve dashboard --port 0` as its own process group; the address from its first line."""

    def __init__(self, nats_url: str, log: Path, token: str | None = None, data_dir: Path | None = None) -> None:
        env = {**os.environ, "LORAFLEET_NATS_URL": nats_url, "PYTHONUNBUFFERED": "1", "LORAFLEET_DASHBOARD_RECONNECT_S": "0.5"}
        env.pop("LORAFLEET_DASHBOARD_TOKEN", None)
        if token:
            env["LORAFLEET_DASHBOARD_TOKEN"] = token
        if data_dir:
            env["LORAFLEET_DATA_DIR"] = str(data_dir)
        self.log = log
        self.fh = open(log, "wb")
        self.proc = subprocess.Popen([*LORAFLEET, "serve", "dashboard", "--port", "0"], env=env, stdout=self.fh,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.url = ""

    async def ready(self, timeout: float = 60.0) -> str:
        async def address():
            assert self.proc.poll() is None, self.log.read_text()
            m = re.search(r"dashboard on (http://\S+?)/? ", self.log.read_text())
            return m.group(1) if m else None

        self.url = await wait_for(address, timeout, "dashboard address")
        return self.url

    def stop(self) -> None:
        from lorafleet.shared.processes import stop_groups

        stop_groups([self.proc])
        self.fh.close()


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, object]:
    async with session.get(url) as resp:
        body = await resp.text()
        try:
            return resp.status, json.loads(body)
        except ValueError:
            return resp.status, body
