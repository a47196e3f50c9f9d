"""The bus runner against a real nats-server: typed delivery, acks, dead letters, heartbeat, dedup."""

from __future__ import annotations

import asyncio
import json

from lorafleet.shared.bus import publish_event
from lorafleet.shared.dead_letters import DeadLetter
from lorafleet.shared.service import Service
from lorafleet.shared.events import ArtifactRef, DatasetReady, StageFailed, TrainRequested


def request(name: str = "python-lora", rid: str = "req-1") -> TrainRequested:
    return TrainRequested(request_id=rid, adapter_name=name, config={"x": 1}, config_sha256="abc")


def ready_for(event: TrainRequested) -> DatasetReady:
    return event.follow(DatasetReady, adapter_name=event.adapter_name, config={}, config_sha256="c",
                        dataset=ArtifactRef(uri="nats-obj://b/d.tar", sha256="0" * 64))


async def test_round_trip_typed_and_acked(settings, js, h):
    service = Service("ingest")
    seen: list[object] = []

    @service.handler(TrainRequested)
    async def on_train_requested(event: TrainRequested, ctx) -> list[DatasetReady]:
        seen.append(event)
        return [ready_for(event)]

    sent = request()
    async with service.running(settings) as runner:
        await publish_event(js, sent)
        await h.wait_for(lambda: runner.processed == 1, what="the event to be handled")
    assert len(seen) == 1 and isinstance(seen[0], TrainRequested)
    assert seen[0] == sent  # typed and equal, datetime included
    out = [json.loads(m) for m in await h.messages_on(js, DatasetReady.subject())]
    assert [o["event_id"] for o in out] == [ready_for(sent).event_id]
    info = await js.consumer_info("LORAFLEET", "ingest")
    assert info.num_ack_pending == 0 and info.num_pending == 0 and info.num_redelivered == 0


async def test_always_failing_handler_dead_letters_after_max_deliver(settings, js, h):
    service = Service("ingest")
    attempts: dict[str, int] = {}

    @service.handler(TrainRequested)
    async def on_train_requested(event: TrainRequested, ctx) -> list[DatasetReady]:
        attempts[event.adapter_name] = attempts.get(event.adapter_name, 0) + 1
        if event.adapter_name == "poison":
            raise RuntimeError("disk on fire")
        return [ready_for(event)]

    poison, good = request("poison", "r-poison"), request("good", "r-good")
    async with service.running(settings) as runner:
        await publish_event(js, poison)
        await h.wait_for(lambda: h.subject_counts(js, "lorafleet.v1.dlq.ingest"), what="a dead letter")
        await publish_event(js, good)
        await h.wait_for(lambda: runner.processed == 1, what="the good event after the poison one")
    assert attempts == {"poison": settings.max_deliver, "good": 1}
    [raw] = await h.messages_on(js, "lorafleet.v1.dlq.ingest")
    letter = DeadLetter.model_validate_json(raw)
    assert letter.reason == "max_deliver" and letter.num_delivered == settings.max_deliver
    assert "RuntimeError: disk on fire" in letter.error
    assert TrainRequested.model_validate_json(letter.original_bytes()) == poison
    [failed] = [json.loads(m) for m in await h.messages_on(js, "lorafleet.v1.ingest.failed")]
    assert StageFailed.model_validate(failed).input_event_id == poison.event_id and failed["retriable"] is False


async def test_invalid_json_and_wrong_schema_version_are_dead_lettered_at_once(settings, js, h):
    service = Service("ingest")
    handled: list[TrainRequested] = []

    @service.handler(TrainRequested)
    async def on_train_requested(event: TrainRequested, ctx) -> None:
        handled.append(event)

    wrong_version = request().model_dump(mode="json") | {"schema_version": 2}
    async with service.running(settings) as runner:
        await js.publish("lorafleet.v1.train.requested", b'{"adapter_name": "x", ')
        await js.publish("lorafleet.v1.train.requested", json.dumps(wrong_version).encode())
        await publish_event(js, request("fine"))
        await h.wait_for(lambda: runner.processed == 1, what="the valid event")
        await h.wait_for(lambda: h.subject_counts(js, "lorafleet.v1.dlq.ingest"), what="dead letters")
    assert [e.adapter_name for e in handled] == ["fine"]
    letters = [DeadLetter.model_validate_json(m) for m in await h.messages_on(js, "lorafleet.v1.dlq.ingest")]
    assert [(x.reason, x.num_delivered) for x in letters] == [("invalid", 1), ("invalid", 1)]
    assert "invalid train.requested event" in letters[0].error and "JSON" in letters[0].error
    assert letters[0].original == '{"adapter_name": "x", '
    assert "schema_version" in letters[1].error and "1" in letters[1].error
    info = await js.consumer_info("LORAFLEET", "ingest")
    assert info.num_ack_pending == 0 and info.num_pending == 0  # terminated, not left to redeliver


async def test_heartbeat_keeps_a_long_handler_from_redelivery(settings, js, h):
    settings = settings.model_copy(update={"ack_wait_s": 1.0, "heartbeat_s": 0.25})
    service = Service("trainer")
    calls = []

    @service.handler(TrainRequested)
    async def on_train_requested(event: TrainRequested, ctx) -> list[DatasetReady]:
        calls.append(event.event_id)
        await asyncio.sleep(3.0)  # three ack_waits
        return [ready_for(event)]

    async with service.running(settings) as runner:
        await publish_event(js, request())
        await h.wait_for(lambda: runner.processed == 1, timeout=15, what="the long handler to finish")
        await asyncio.sleep(1.5)  # a redelivery, if any, would show up now
    assert len(calls) == 1
    info = await js.consumer_info("LORAFLEET", "trainer")
    assert info.num_redelivered == 0 and info.num_ack_pending == 0


async def test_same_outcome_published_twice_is_recorded_once(js, h):
    event = ready_for(request())
    first = await publish_event(js, event)
    second = await publish_event(js, event)
    assert not first.duplicate and second.duplicate
    assert (await h.subject_counts(js, DatasetReady.subject())) == {DatasetReady.subject(): 1}


async def test_replicas_in_one_process_share_one_durable_consumer(settings, js, h):
    seen: dict[str, list[str]] = {"a": [], "b": []}

    def make(tag: str) -> Service:
        service = Service("enrich")

        @service.handler(DatasetReady)
        async def on_dataset_ready(event: DatasetReady, ctx) -> None:
            seen[tag].append(event.event_id)
            await asyncio.sleep(0.01)

        return service

    async with make("a").running(settings), make("b").running(settings):
        events = [ready_for(request(rid=f"r{i}")) for i in range(40)]
        for e in events:
            await publish_event(js, e)
        await h.wait_for(lambda: len(seen["a"]) + len(seen["b"]) >= 40, what="40 events")
        await asyncio.sleep(0.3)
    assert sorted(seen["a"] + seen["b"]) == sorted(e.event_id for e in events)
    assert seen["a"] and seen["b"]
    assert [c.name for c in await js.consumers_info("LORAFLEET")] == ["enrich"]


async def test_stopping_mid_handler_hands_the_message_back_at_once(settings, js, h):
    from lorafleet.shared.runner import Runner

    settings = settings.model_copy(update={"ack_wait_s": 30.0})  # a redelivery by timeout would take 30 s
    slow, fast = Service("trainer"), Service("trainer")
    started = asyncio.Event()
    done: list[str] = []

    @slow.handler(TrainRequested)
    async def on_train_requested(event: TrainRequested, ctx) -> None:
        started.set()
        await asyncio.sleep(3600)

    @fast.handler(TrainRequested)
    async def on_train_requested_again(event: TrainRequested, ctx) -> None:
        done.append(event.event_id)

    first = Runner(slow, settings)
    await first.start()
    sent = request()
    await publish_event(js, sent)
    await asyncio.wait_for(started.wait(), 10)
    await first.stop(grace_s=0.2)
    async with fast.running(settings):
        await h.wait_for(lambda: done, timeout=10, what="the handed-back message")
    assert done == [sent.event_id]
