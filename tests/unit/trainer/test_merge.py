import json

import pytest
import torch

from lorafleet.services.trainer.merge import MergeError, merge_adapter, probe_batch


@pytest.fixture(scope="module")
def adapter(tiny_dir, tmp_path_factory):
    """A LoRA adapter with non-zero B (init_lora_weights=False), so merging changes the weights."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                  init_lora_weights=False))
    out = tmp_path_factory.mktemp("adapter") / "a"
    peft_model.save_pretrained(out)
    return out


def test_merge_writes_verified_weights(adapter, tiny_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report = merge_adapter(adapter, tmp_path / "merged")
    assert report["max_abs_diff"] <= report["tolerance"] * report["logit_scale"] and report["probe_tokens"] > 50
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    batch = probe_batch(tok)
    with torch.no_grad():
        assert not torch.allclose(merged(**batch).logits, base(**batch).logits, atol=1e-3), "the adapter changed nothing"
    assert json.loads((tmp_path / "merged" / "merge_report.json").read_text())["max_abs_diff"] == report["max_abs_diff"]
    assert not any("lora" in k for k in merged.state_dict())


def test_lossy_merge_fails_and_writes_nothing(adapter, tmp_path):
    with pytest.raises(MergeError, match="disagrees with base\\+adapter"):
        merge_adapter(adapter, tmp_path / "merged", dtype="bfloat16", tolerance=1e-5)
    assert not (tmp_path / "merged").exists() and not (tmp_path / "merged.merging").exists()


def test_not_an_adapter(tmp_path):
    with pytest.raises(MergeError, match="no adapter_config.json"):
        merge_adapter(tmp_path, tmp_path / "out")
