"""Helpers of the trainer integration tests (a uniquely named module: importlib mode)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from lorafleet.shared.config import parse_config
from lorafleet.shared.events import STREAM, SUBJECT_PREFIX, event_type_of_subject, parse_event

ROOT = Path(__file__).resolve().parents[3]


def tiny_config(base_model, training=None, validation=None, data=None, **top):
    raw = yaml.safe_load((ROOT / "configs" / "tiny_python_lora.yaml").read_text())
    raw["base_model"] = str(base_model)
    raw["training"].update({"max_steps": 8, "save_steps": 4, "logging_steps": 2, "batch_size": 2,
                            "max_seq_length": 128, **(training or {})})
    raw["validation"].update({"eval_steps": 4, "pass_at_1_problems": 2, "max_new_tokens": 16, **(validation or {})})
    raw["data"].update({"min_examples": 10, **(data or {})})
    raw.update(top)
    return parse_config(raw, "tiny_python_lora.yaml (test overrides)")


async def wait_for(predicate: Callable[[], object], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class EventLog:
    """Every event on the stream, parsed, in order (an ordered consumer from the start)."""

    def __init__(self) -> None:
        self.events: list = []
        self.sub = None

    async def start(self, js) -> "EventLog":
        async def on_msg(msg):
            try:
                self.events.append((event_type_of_subject(msg.subject), parse_event(msg.subject, msg.data)))
            except ValueError:
                pass

        self.sub = await js.subscribe(f"{SUBJECT_PREFIX}.>", cb=on_msg, ordered_consumer=True)
        return self

    def of(self, event_type: str) -> list:
        return [e for t, e in self.events if t == event_type]


async def stored_count(js, event_type: str) -> int:
    info = await js.stream_info(STREAM, subjects_filter=f"{SUBJECT_PREFIX}.{event_type}")
    return sum((info.state.subjects or {}).values())
