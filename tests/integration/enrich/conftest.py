"""The enrich tests' external endpoint: a real aiohttp chat-completions server on loopback."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from lorafleet.shared.problems import TrainExample

_path = Path(__file__).parents[2] / "fixtures" / "enrich" / "fake_chat_server.py"
_spec = importlib.util.spec_from_file_location("lorafleet_test_fake_chat_server", _path)
fake_chat_server = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fake_chat_server
_spec.loader.exec_module(fake_chat_server)
FakeChatServer = fake_chat_server.FakeChatServer


@pytest.fixture
async def chat_server():
    server = await FakeChatServer().start()
    try:
        yield server
    finally:
        await server.stop()


def make_example(i: int, fault: str | None = None, reasoning: str | None = None) -> TrainExample:
    statement = f"Problem {i}: read n and print n * {i}."
    if fault:
        statement += f" FAULT={fault}"
    return TrainExample(
        id=f"ex{i}", problem_id=f"p{i}", source="synthetic", statement=statement,
        code=f"n = int(input())\nprint(n * {i})\n", reasoning=reasoning,
    )


def write_dataset(root: Path, train: list[TrainExample], eval_: list[TrainExample] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.jsonl").write_text("".join(e.model_dump_json() + "\n" for e in train))
    (root / "eval.jsonl").write_text("".join(e.model_dump_json() + "\n" for e in (eval_ or [])))
    (root / "eval_problems.jsonl").write_text("")
    (root / "manifest.json").write_text('{"source": "test"}\n')
    return root


@pytest.fixture
def example_factory():
    return make_example


@pytest.fixture
def dataset_writer():
    return write_dataset


@pytest.fixture(scope="session")
def tiny_model_pair(tmp_path_factory):
    """A random-init tiny base (the trainer's make_tiny) and a LoRA with nonzero B, so the two differ."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lorafleet.services.trainer.tiny_model import make_tiny

    root = tmp_path_factory.mktemp("tiny-serve")
    base = make_tiny(root / "base")
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                                LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False, task_type="CAUSAL_LM"))
    peft_model.save_pretrained(root / "adapter")
    return base, root / "adapter"


@pytest.fixture(scope="session")
def local_model(tiny_model_pair):
    from lorafleet.services.enrich.model_server import LocalModel

    base, adapter = tiny_model_pair
    return LocalModel(base, {"py-lora": adapter}, base_name="tiny")


@pytest.fixture
async def model_url(local_model):
    from lorafleet.services.enrich.model_server import ModelServer, start

    runner, port = await start(ModelServer(local_model))
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()
