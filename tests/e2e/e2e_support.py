"""Real service processes on a real nats-server, for the end-to-end tests.

`Fleet` starts `lorafleet serve NAME` replicas (each in its own process group,
stopped by pid group, never by name); `EventLog` records every event on the bus;
`tiny_pipeline_config` is a training config that runs the whole pipeline in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nats
from nats.js import api

from lorafleet.shared.config import parse_config
from lorafleet.shared.events import STREAM


@dataclass
class Replica:
    service: str
    index: int
    log: Path
    proc: subprocess.Popen | None = None
    env: dict[str, str] = field(default_factory=dict)  # this replica's own variables (e.g. its metrics port)
    kills: int = 0
    crashes: int = 0


@dataclass
class Fleet:
    nats_url: str
    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    replicas: list[Replica] = field(default_factory=list)

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "LORAFLEET_NATS_URL": self.nats_url,
            "LORAFLEET_DATA_DIR": str(self.data_dir),
            "LORAFLEET_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
            **self.env,
        }

    def start(self, service: str, count: int = 1, env: dict[str, str] | None = None) -> list[Replica]:
        started = []
        for _ in range(count):
            index = sum(r.service == service for r in self.replicas)
            replica = Replica(service, index, self.data_dir / "logs" / f"{service}-{index}.log", env=dict(env or {}))
            self.replicas.append(replica)
            self._spawn(replica)
            started.append(replica)
        return started

    def _spawn(self, replica: Replica) -> None:
        replica.log.parent.mkdir(parents=True, exist_ok=True)
        with open(replica.log, "ab") as fh:
            replica.proc = subprocess.Popen(
                [sys.executable, "-c", "from lorafleet.cli import main; main()", "serve", replica.service],
                env={**self._env(), **replica.env}, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def of(self, service: str) -> list[Replica]:
        return [r for r in self.replicas if r.service == service]

    def kill(self, replica: Replica) -> None:
        """SIGKILL the replica's whole process group (its sandbox children too)."""
        if replica.proc is not None and replica.proc.poll() is None:
            os.killpg(replica.proc.pid, signal.SIGKILL)
            replica.proc.wait()
        replica.kills += 1

    def restart(self, replica: Replica) -> None:
        self._spawn(replica)

    def revive(self) -> list[Replica]:
        """Restart replicas that exited on their own, as `lorafleet up`, compose and Kubernetes do."""
        dead = [r for r in self.replicas if r.proc is not None and r.proc.poll() is not None]
        for r in dead:
            r.crashes += 1
            self._spawn(r)
        return dead

    def alive(self) -> list[Replica]:
        return [r for r in self.replicas if r.proc is not None and r.proc.poll() is None]

    def stop(self) -> None:
        for r in self.replicas:
            if r.proc is not None and r.proc.poll() is None:
                os.killpg(r.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for r in self.replicas:
            if r.proc is None:
                continue
            try:
                r.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(r.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            r.proc.wait()

    def logs(self) -> str:
        return "\n".join(f"===== {r.service}#{r.index}\n{r.log.read_text(errors='replace')[-3000:]}"
                         for r in self.replicas if r.log.is_file())


class EventLog:
    """Every message on lorafleet.v1.> (core subscription: sees each publish, duplicates included)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict]] = []
        self.nc = None

    async def start(self, url: str) -> "EventLog":
        self.nc = await nats.connect(url)

        async def on_msg(msg) -> None:
            try:
                body = json.loads(msg.data)
            except ValueError:
                body = {}
            self.items.append((msg.subject.removeprefix("lorafleet.v1."), body))

        await self.nc.subscribe("lorafleet.v1.>", cb=on_msg)
        return self

    def of(self, event_type: str) -> list[dict]:
        return [d for t, d in self.items if t == event_type]

    def types(self) -> list[str]:
        return [t for t, _ in self.items]

    async def wait(self, event_type: str, timeout: float, count: int = 1, fleet: Fleet | None = None) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.of(event_type)
            if len(found) >= count:
                return found
            failed = [t for t in self.types() if t.endswith(".failed") or t.startswith("dlq.")]
            if failed:
                raise AssertionError(f"{failed} while waiting for {event_type}: "
                                     f"{[d for t, d in self.items if t in failed][:2]}"
                                     + (f"\n{fleet.logs()}" if fleet else ""))
            await asyncio.sleep(0.1)
        raise AssertionError(f"{count} x {event_type} not seen within {timeout}s; saw {self.types()}"
                             + (f"\n{fleet.logs()}" if fleet else ""))

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()


def tiny_pipeline_config(adapter_name: str = "e2e-lora", **overrides) -> dict:
    """The whole pipeline in seconds: tiny random base, a few training steps, a handful of
    held-out problems, a gate that any measured result passes (the pipeline is under test,
    not the model: the demo is where the adapter must win)."""
    cfg = {
        "adapter_name": adapter_name,
        "base_model": "tiny://random",
        "quantization": "none",
        "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        "training": {"max_steps": 12, "batch_size": 2, "gradient_accumulation_steps": 1, "learning_rate": 1e-3,
                     "max_seq_length": 128, "gradient_checkpointing": False, "optim": "adamw_torch", "bf16": False,
                     "packing": False, "save_steps": 6, "save_total_limit": 2, "logging_steps": 2, "seed": 0},
        "data": {"sources": [{"type": "synthetic", "limit": 40}, {"type": "synthetic", "role": "validation", "limit": 6}],
                 "domains": ["python"], "min_examples": 10,
                 "verify": {"enabled": True, "max_tests_per_problem": 2, "time_budget_s": 10}},
        "validation": {"eval_steps": 6, "pass_at_1_problems": 2, "max_new_tokens": 16, "early_stopping_patience": 0},
        "evaluation": {"backend": "transformers", "n": 2, "k": [1], "temperature": 0.8, "max_new_tokens": 16,
                       "greedy": False, "shard_size": 2, "max_problems": 6},
        "gate": {"min_pass_at_1": 0.0, "min_delta_pass_at_1": -1.0, "max_latency_increase": 1000.0,
                 "max_error_rate": 1.0},
    }
    for key, value in overrides.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) else value
    return parse_config(cfg, "<e2e>").model_dump(mode="json")


async def count_in_stream(js, event_type: str) -> int:
    """Messages of one type in the stream; -1 while no leader answers."""
    with contextlib.suppress(Exception):
        info = await js.stream_info(STREAM, subjects_filter=f"lorafleet.v1.{event_type}")
        return sum((info.state.subjects or {}).values())
    return -1


async def unique_in_stream(js, event_type: str) -> list[dict]:
    """Messages of one type in the stream (what a consumer would see), not core-NATS publishes."""
    total = await count_in_stream(js, event_type)
    out: list[dict] = []
    if total > 0:
        sub = await js.subscribe(f"lorafleet.v1.{event_type}", ordered_consumer=True,
                                 config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL))
        try:
            while len(out) < total:
                out.append(json.loads((await sub.next_msg(timeout=5)).data))
        finally:
            await sub.unsubscribe()
    return out
