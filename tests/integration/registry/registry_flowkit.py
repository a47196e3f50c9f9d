"""Helpers for the registry's bus tests: adapter artifacts, reading events back from the stream."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from lorafleet.shared.config import TrainConfig
from lorafleet.shared.events import STREAM, AdapterEvaluated, ArtifactRef, GateCriterion


def write_adapter(path: Path, rank: int = 16, modules=("q_proj", "v_proj"), name: str = "python-lora",
                  with_config: bool = True) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": list(modules),
        "base_model_name_or_path": "tiny-base", "task_type": "CAUSAL_LM"}))
    (path / "adapter_model.safetensors").write_bytes(b"\0" * 1024 + str(path).encode())
    config = TrainConfig(adapter_name=name, base_model="tiny-base").model_dump(mode="json")
    (path / "training_summary.json").write_text(json.dumps({"config": config} if with_config else {"steps": 10}))
    return path


def evaluated_event(ref: ArtifactRef, version: int, passed: bool = True, name: str = "python-lora",
                    rank: int = 8) -> AdapterEvaluated:
    return AdapterEvaluated(
        request_id=f"train-{name}-{version}", adapter_name=name, version=version, adapter=ref, base_model="tiny-base",
        rank=rank, target_modules=["q_proj", "v_proj"], gate_passed=passed, domains=["python"],
        gate=[GateCriterion(name="delta pass@1", measured=0.3 if passed else 0.0, threshold=0.05, comparison=">=",
                            passed=passed)],
        metrics={"pass@1": {"base": 0.1, "adapter": 0.4}})


async def count(js, subject: str) -> int:
    info = await js.stream_info(STREAM, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def read(js, subject: str) -> list[dict]:
    n = await count(js, subject)
    if not n:
        return []
    sub = await js.subscribe(subject, ordered_consumer=True, stream=STREAM)
    msgs = [await sub.next_msg(timeout=5) for _ in range(n)]
    await sub.unsubscribe()
    return [json.loads(m.data) for m in msgs]


async def wait_count(js, subject: str, n: int, timeout: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await count(js, subject) >= n:
            return await read(js, subject)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{subject}: expected {n} messages within {timeout}s, have {await count(js, subject)}")
