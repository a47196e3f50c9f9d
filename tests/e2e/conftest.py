"""End-to-end fixtures: a tiny pipeline config, real service processes, the event log."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fleet import EventLog, Fleet  # noqa: E402

from lorafleet.shared.config import parse_config  # noqa: E402


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


@pytest.fixture
def fleet(nats_url, tmp_path):
    f = Fleet(nats_url, tmp_path / "data", env={
        "LORAFLEET_ACK_WAIT_S": "6", "LORAFLEET_MAX_DELIVER": "6", "LORAFLEET_RETRY_DELAY_S": "0.5",
    })
    try:
        yield f
    finally:
        f.stop()


@pytest.fixture
async def events(nats_url):
    log = await EventLog().start(nats_url)
    try:
        yield log
    finally:
        await log.close()
