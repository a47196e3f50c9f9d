"""The enrich service through the bus runner on a real nats-server, against the local chat server."""

from __future__ import annotations

import asyncio

import pytest

from lorafleet.services.enrich.app import service
from lorafleet.services.enrich.dataset import read_examples
from lorafleet.shared.bus import publish_event
from lorafleet.shared.config import parse_config
from lorafleet.shared.events import DatasetReady
from lorafleet.shared.settings import Settings

FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 2.0, "max_retries": 2, "concurrency": 4}


@pytest.fixture
def settings(nats_url, tmp_path, monkeypatch):
    monkeypatch.delenv("LORAFLEET_ENRICH_ENDPOINT", raising=False)
    monkeypatch.delenv("LORAFLEET_ENRICH_MODEL", raising=False)
    return Settings(nats_url=nats_url, data_dir=tmp_path / "data", max_deliver=3, retry_delay_s=0.2, ack_wait_s=10)


async def ready_event(runner, tmp_path, dataset_writer, examples, enrich: dict) -> DatasetReady:
    src = dataset_writer(tmp_path / "ds", examples)
    ref = await runner.ctx.artifacts.put_dir(src, "datasets/test/ready")
    config = parse_config({"adapter_name": "python-lora", "base_model": "tiny", "enrich": enrich}).model_dump(mode="json")
    return DatasetReady(request_id="req-1", adapter_name="python-lora", dataset=ref, stats={"train": len(examples)},
                        config=config, config_sha256="0" * 64)


async def test_dataset_ready_to_enriched(record_events, settings, chat_server, example_factory, dataset_writer, tmp_path):
    async with service.running(settings) as runner:
        events = await record_events(runner.ctx.nc)
        examples = [example_factory(i, "length" if i == 3 else None) for i in range(12)]
        event = await ready_event(runner, tmp_path, dataset_writer, examples,
                                  {"endpoint": chat_server.url, "model": "reasoner", **FAST})
        await publish_event(runner.ctx.js, event)
        [done] = await events.wait("dataset.enriched")
        out = await runner.ctx.artifacts.get_dir(done["dataset"]["uri"], tmp_path / "got")
    assert done["request_id"] == "req-1" and done["config"] == event.config
    assert done["stats"]["generated"] == 11 and done["stats"]["rejected_by_reason"] == {"truncated": 1}
    assert done["stats"]["ingest"] == {"train": 12}
    assert done["dataset"]["sha256"] != event.dataset.sha256
    got = read_examples(out / "train.jsonl")
    assert sum(1 for e in got if e.reasoning) == 11 and len(got) == 12
    assert not list((settings.data_dir / "enrich" / "jobs").iterdir())  # scratch cleaned


async def test_no_endpoint_passes_the_dataset_through(record_events, settings, example_factory, dataset_writer, tmp_path):
    async with service.running(settings) as runner:
        events = await record_events(runner.ctx.nc)
        event = await ready_event(runner, tmp_path, dataset_writer, [example_factory(1)], {})
        await publish_event(runner.ctx.js, event)
        [done] = await events.wait("dataset.enriched")
    assert done["dataset"] == event.dataset.model_dump(mode="json")
    assert done["stats"]["skipped"] is True


async def test_endpoint_down_fails_retriable_then_redelivery_resumes(record_events, settings, chat_server, example_factory,
                                                                     dataset_writer, tmp_path):
    chat_server.down = True
    async with service.running(settings) as runner:
        events = await record_events(runner.ctx.nc)
        event = await ready_event(runner, tmp_path, dataset_writer, [example_factory(i) for i in range(6)],
                                  {"endpoint": chat_server.url, "model": "reasoner", **FAST})
        await publish_event(runner.ctx.js, event)
        [fail] = await events.wait("enrich.failed")
        assert fail["retriable"] is True and chat_server.url in fail["error"]
        assert fail["input_event_id"] == event.event_id
        chat_server.down = False  # the server comes back: the bus's redelivery finishes the job
        [done] = await events.wait("dataset.enriched")
    assert done["stats"]["generated"] == 6
    assert not events.of("dlq.enrich")


async def test_unknown_model_fails_without_retry(record_events, settings, chat_server, example_factory, dataset_writer, tmp_path):
    async with service.running(settings) as runner:
        events = await record_events(runner.ctx.nc)
        event = await ready_event(runner, tmp_path, dataset_writer, [example_factory(1)],
                                  {"endpoint": chat_server.url, "model": "nope", **FAST})
        await publish_event(runner.ctx.js, event)
        [fail] = await events.wait("enrich.failed")
        await asyncio.sleep(0.5)
    assert fail["retriable"] is False and "'nope'" in fail["error"]
    assert len(events.of("enrich.failed")) == 1 and not events.of("dataset.enriched")
    assert runner.processed == 1
