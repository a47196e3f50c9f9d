import json

import pytest

from lorafleet.shared import synthetic


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    """A random-init tiny base (the trainer's make_tiny) and a LoRA whose B is nonzero,
    so base and base + adapter really differ."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lorafleet.services.trainer.tiny_model import make_tiny

    root = tmp_path_factory.mktemp("tiny")
    base = make_tiny(root / "base")
    model = AutoModelForCausalLM.from_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                                                  init_lora_weights=False, task_type="CAUSAL_LM"))
    peft_model.save_pretrained(root / "adapter")
    return base, root / "adapter"


@pytest.fixture(scope="session")
def heldout_problems(tmp_path_factory):
    problems = synthetic.lora_problems("python", "heldout")[:4]
    path = tmp_path_factory.mktemp("problems") / "eval_problems.jsonl"
    path.write_text("".join(p.model_dump_json() + "\n" for p in problems))
    return path, problems


def read_json(path):
    return json.loads(path.read_text())
