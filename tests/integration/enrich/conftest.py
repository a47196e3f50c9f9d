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
