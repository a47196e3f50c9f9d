"""Bad input to the vLLM paths: a clear error naming the setting to change, never a hang."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

from lorafleet.shared.errors import ConfigError, LorafleetError

pytestmark = pytest.mark.timeout(1200)


def _variant(base, dest, **changes):
    shutil.copytree(base, dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg.update(changes)
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "lorafleet.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_head_size_vllm_cpu_lacks_is_refused_before_starting(tiny_pair, problems, tmp_path):
    base, adapter = tiny_pair
    problems_file = tmp_path / "problems.jsonl"
    problems_file.write_text(problems[0].model_dump_json() + "\n")
    bad = _variant(base, tmp_path / "hd16", hidden_size=64)  # 64 / 4 heads = 16: not in vLLM's CPU attention
    res = _cli("model", "serve", str(bad), "--engine", "vllm", "--port", "0")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "head size 16" in res.stderr and "hidden_size / num_attention_heads" in res.stderr
    res = _cli("eval", "run", "--backend", "vllm", "--base", str(bad), "--adapter", str(adapter),
               "--problems", str(problems_file), "--n", "1", "--k", "1")
    assert res.returncode == 2 and "head size 16" in res.stderr, res.stderr


def test_adapter_rank_above_max_lora_rank_and_missing_adapter(tiny_pair, big_adapter, tmp_path):
    from lorafleet.services.evaluator.backends.vllm import VLLMBackend

    base, adapter = tiny_pair
    with pytest.raises(ConfigError, match="LoRA rank 16 is above the engine's max_lora_rank 8: start vLLM with --max-lora-rank 16"):
        VLLMBackend(str(base), big_adapter, max_lora_rank=8)
    with pytest.raises(ConfigError, match="nowhere: no such directory"):
        VLLMBackend(str(base), tmp_path / "nowhere")
    res = _cli("model", "serve", str(base), "--engine", "vllm", "--port", "0", "--max-lora-rank", "8",
               "--adapter", f"big={big_adapter}")
    assert res.returncode == 2 and "rank 16 is above --max-lora-rank 8: use --max-lora-rank 16" in res.stderr, res.stderr
    res = _cli("model", "serve", str(base), "--engine", "vllm", "--port", "0", "--adapter", f"x={tmp_path / 'nowhere'}")
    assert res.returncode == 2 and "nowhere" in res.stderr and "adapter_config.json" in res.stderr, res.stderr


def test_a_model_vllm_cannot_load_fails_fast_with_its_log(tiny_pair, tmp_path):
    """Passes the project's checks but vLLM rejects it: the engine's own error comes back, and the
    server command exits with it, both well before any deadline (no hang)."""
    from lorafleet.services.evaluator.backends.vllm import VLLMBackend

    base, adapter = tiny_pair
    bad = _variant(base, tmp_path / "unknown-arch", architectures=["NoSuchModelForCausalLM"])
    started = time.monotonic()
    serve = subprocess.Popen([sys.executable, "-m", "lorafleet.cli", "model", "serve", str(bad), "--engine", "vllm",
                              "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        with pytest.raises(LorafleetError, match="vLLM could not start the engine") as err:
            VLLMBackend(str(bad), adapter, start_timeout_s=900)
        assert "NoSuchModelForCausalLM" in str(err.value)
        out, errs = serve.communicate(timeout=900)
    finally:
        if serve.poll() is None:
            from lorafleet.shared.processes import stop_groups

            stop_groups([serve])
    assert serve.returncode == 2, out[-2000:] + errs[-2000:]
    assert "exited with code" in errs and "NoSuchModelForCausalLM" in errs, errs[-3000:]
    assert time.monotonic() - started < 900
