"""The gateway's real surroundings: nats-server (tests/conftest.py), the registry service, the
artifact store, and `lorafleet model serve` with a random-init tiny model as the backend."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lorafleet.shared.settings import Settings

sys.path.insert(0, str(Path(__file__).parent))
from gateway_kit import stop_group  # noqa: E402


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A random-init tiny base and two LoRA adapters with nonzero B (so every version answers differently)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lorafleet.services.trainer.tiny_model import make_tiny

    root = tmp_path_factory.mktemp("gateway-tiny")
    base = make_tiny(root / "base")
    out = {"base": base}
    for i, rank in ((1, 4), (2, 8)):
        torch.manual_seed(i)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                               LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"],
                                          init_lora_weights=False, task_type="CAUSAL_LM"))
        model.save_pretrained(root / f"adapter{i}")
        out[f"v{i}"] = root / f"adapter{i}"
    return out


@pytest.fixture(scope="session")
def backend_url(tiny) -> str:
    """`lorafleet model serve` (a real process) on a free port, for the whole session."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lorafleet.cli", "model", "serve", str(tiny["base"]), "--name", "tiny", "--port", "0"],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
        # One torch thread: on a shared 2-core machine a second spinning thread only slows generation down.
        env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 180
        line = ""
        while time.monotonic() < deadline and not line.startswith("serving"):
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                raise RuntimeError(f"model serve exited with {proc.returncode}")
        assert line.startswith("serving"), line
        yield line.split(" on ")[1].strip()
    finally:
        stop_group(proc)


@pytest.fixture
def settings(nats_url, tmp_path) -> Settings:
    return Settings(nats_url=nats_url, data_dir=tmp_path / "data", ack_wait_s=30, publish_timeout_s=5)


@pytest.fixture
def registry_env(monkeypatch):
    # The A/B test runs for the whole test: no decision is reached with this few outcomes.
    monkeypatch.setenv("LORAFLEET_REGISTRY_AB_TRAFFIC", "0.3")
    monkeypatch.setenv("LORAFLEET_REGISTRY_AB_MIN_SAMPLES", "100000")
    monkeypatch.setenv("LORAFLEET_REGISTRY_OUTCOME_LINGER_MS", "2")


@pytest.fixture
async def registry(settings, registry_env):
    """The registry service (router, outcome recorder, collector) running in this process."""
    from lorafleet.services.registry.app import service

    async with service.running(settings) as runner:
        yield runner

