"""The ingest service through the bus runner on a real nats-server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from lorafleet.services.ingest.app import service
from lorafleet.shared.bus import publish_event
from lorafleet.shared.config import parse_config
from lorafleet.shared.events import SourceSpec, TrainRequested
from lorafleet.shared.problems import Problem, TrainExample
from lorafleet.shared.settings import Settings

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "ingest"


@pytest.fixture
def settings(nats_url, tmp_path):
    return Settings(nats_url=nats_url, data_dir=tmp_path / "data", max_deliver=2, ack_wait_s=10)


def request(data: dict, extra: list[SourceSpec] | None = None) -> TrainRequested:
    cfg = parse_config({"adapter_name": "python-lora", "base_model": "tiny", "data": data})
    return TrainRequested(request_id="req-ingest", adapter_name="python-lora", config=cfg.model_dump(mode="json"),
                          config_sha256=cfg.sha256(), reason="retrain", extra_sources=extra or [])


async def test_train_requested_to_dataset_ready(settings, tmp_path, record_events):
    data = {
        "sources": [
            {"type": "apps", "path": str(FIXTURES / "apps.jsonl")},
            {"type": "lorafleet", "path": str(FIXTURES / "lorafleet.jsonl")},
            {"type": "humaneval", "path": str(FIXTURES / "humaneval.jsonl.gz"), "role": "validation"},
        ],
        "domains": ["python", "math", "algorithms", "data_structures"],
        "min_examples": 1,
        "eval_fraction": 0.3,
    }
    async with service.running(settings) as runner:
        events = await record_events(runner.ctx.nc)
        # the collector's pool travels as an artifact URI
        pool = await runner.ctx.artifacts.put_file(FIXTURES / "production.jsonl", "pools/python-lora/pool.jsonl")
        event = request(data, [SourceSpec(type="production", path=pool.uri)])
        await publish_event(runner.ctx.js, event)
        ready = (await events.wait("dataset.ready", timeout=30.0))[0]
        got = await runner.ctx.artifacts.get_dir(ready["dataset"]["uri"], tmp_path / "got")
    assert ready["request_id"] == "req-ingest" and ready["config"] == event.config
    stats = ready["stats"]
    assert stats["sources"]["production"]["verified"] == 1 and stats["verified"] == 8
    assert stats["validation_problems"] == 2 and stats["duplicate_problems"] == 1  # APPS 11 = own "max"
    train = [TrainExample.model_validate_json(x) for x in (got / "train.jsonl").read_text().splitlines()]
    evals = [TrainExample.model_validate_json(x) for x in (got / "eval.jsonl").read_text().splitlines()]
    assert len(train) == stats["train"] and len(evals) == stats["eval"] and train
    problems = [Problem.model_validate_json(x) for x in (got / "eval_problems.jsonl").read_text().splitlines()]
    assert {"humaneval/0", "humaneval/1"} <= {p.id for p in problems}
    assert json.loads((got / "manifest.json").read_text())["stats"]["train"] == stats["train"]
    assert not list((settings.data_dir / "ingest" / "jobs").iterdir())  # scratch cleaned


async def test_too_few_examples_is_ingest_failed(settings, record_events):
    data = {"sources": [{"type": "humaneval", "path": str(FIXTURES / "humaneval.jsonl.gz")}], "min_examples": 50}
    async with service.running(settings) as runner:
        events = await record_events(runner.ctx.nc)
        await publish_event(runner.ctx.js, request(data))
        failed = (await events.wait("ingest.failed", timeout=30.0))[0]
        await asyncio.sleep(0.3)
    assert failed["stage"] == "ingest" and failed["retriable"] is False
    assert "min_examples=50" in failed["error"] and "only 1 training examples" in failed["error"]
    assert not [t for t, _ in events.items if t == "dataset.ready"]
