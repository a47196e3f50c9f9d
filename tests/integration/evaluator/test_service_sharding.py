"""Two evaluator replicas as separate processes against a real nats-server share
one evaluation: each shard is scored once, the result aggregated once, one
adapter.evaluated with the gate and a report artifact."""

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nats
from nats.js import api

from lorafleet.shared.artifacts import open_store
from lorafleet.shared.bus import ensure_stream
from lorafleet.shared.config import parse_config
from lorafleet.shared.events import STREAM, AdapterEvaluated, AdapterTrained, EvalShardDone, parse_event
from lorafleet.shared.processes import stop_groups
from lorafleet.shared.settings import Settings


async def stream_events(js, subject="lorafleet.v1.>"):
    sub = await js.pull_subscribe(subject, stream=STREAM, config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL))
    out = []
    try:
        while True:
            try:
                msgs = await sub.fetch(100, timeout=0.5)
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                break
            for m in msgs:
                if not m.subject.startswith("lorafleet.v1.dlq"):
                    out.append(parse_event(m.subject, m.data))
                await m.ack()
    finally:
        await sub.unsubscribe()
    return out


def start_replica(env, log):
    exe = Path(sys.executable).parent / "lorafleet"
    return subprocess.Popen([str(exe), "serve", "evaluator"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


async def test_two_replicas_share_one_evaluation(nats_url, tiny_pair, heldout_problems, tmp_path):
    base, adapter = tiny_pair
    problems_path, problems = heldout_problems
    env = {**os.environ, "LORAFLEET_NATS_URL": nats_url, "LORAFLEET_DATA_DIR": str(tmp_path / "data"),
           "LORAFLEET_ACK_WAIT_S": "30", "LORAFLEET_MAX_DELIVER": "3"}
    settings = Settings(nats_url=nats_url, data_dir=tmp_path / "data")
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_stream(js, settings)
    logs = [open(tmp_path / f"replica{i}.log", "wb") for i in range(2)]
    procs = [start_replica(env, logs[i]) for i in range(2)]
    try:
        # both replicas bound to the durable consumer and waiting for work
        deadline = time.monotonic() + 90
        while True:
            try:
                info = await js.consumer_info(STREAM, "evaluator")
                if info.num_waiting >= 2:
                    break
            except nats.js.errors.NotFoundError:
                pass
            assert time.monotonic() < deadline, [(tmp_path / f"replica{i}.log").read_text()[-2000:] for i in range(2)]
            assert all(p.poll() is None for p in procs), [(tmp_path / f"replica{i}.log").read_text()[-2000:] for i in range(2)]
            await asyncio.sleep(0.2)

        store = open_store(settings, js=js)
        adapter_ref = await store.put_dir(adapter, "adapters/tiny-lora/v1.tar")
        problems_ref = await store.put_file(problems_path, "datasets/r1/eval_problems.jsonl")
        config = parse_config({"adapter_name": "tiny-lora", "base_model": str(base), "quantization": "none",
                               "evaluation": {"n": 2, "k": [1, 2], "max_new_tokens": 8, "shard_size": 1,
                                              "greedy": False, "batch_size": 4, "bootstrap_resamples": 200}})
        trained = AdapterTrained(request_id="r1", adapter_name="tiny-lora", version=1, adapter=adapter_ref,
                                 base_model=str(base), rank=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                 config=config.model_dump(mode="json"), config_sha256=config.sha256(),
                                 dataset_sha256="d" * 64, eval_problems=problems_ref)
        await js.publish(trained.subject(), trained.to_bytes(), stream=STREAM, headers={"Nats-Msg-Id": trained.event_id})

        deadline = time.monotonic() + 150
        while True:
            events = await stream_events(js)
            if any(isinstance(e, AdapterEvaluated) for e in events):
                break
            failed = [e for e in events if e.event_type == "stage.failed"]
            assert not failed, failed
            assert time.monotonic() < deadline, [(tmp_path / f"replica{i}.log").read_text()[-3000:] for i in range(2)]
            await asyncio.sleep(1.0)
        await asyncio.sleep(1.5)  # anything a second aggregator would have published lands by now
        events = await stream_events(js)
    finally:
        stop_groups(procs, timeout=20)
        for f in logs:
            f.close()

    evaluated = [e for e in events if isinstance(e, AdapterEvaluated)]
    assert len(evaluated) == 1
    logs_text = "".join((tmp_path / f"replica{i}.log").read_text() for i in range(2))
    assert logs_text.count("aggregating evaluation") == 1  # aggregated once, not merely deduplicated on publish
    assert logs_text.count("problems scored on") == len(problems)
    assert "Traceback" not in logs_text
    done = [e for e in events if isinstance(e, EvalShardDone)]
    assert sorted(e.shard_index for e in done) == list(range(len(problems)))  # each shard once

    ev = evaluated[0]
    assert ev.request_id == "r1" and ev.adapter_name == "tiny-lora" and ev.version == 1
    assert [c.name for c in ev.gate] == ["pass@1", "delta_pass@1", "latency_increase", "error_rate"]
    assert ev.gate_passed is False  # a random-init model solves nothing
    assert ev.metrics["problems"] == len(problems) and ev.metrics["adapter"]["samples"] == 2 * len(problems)

    store = open_store(settings, js=js)
    shard_ids = []
    replicas = set()
    for e in done:
        shard = json.loads((await store.get_file(e.result, tmp_path / f"shard{e.shard_index}.json")).read_text())
        shard_ids += [(p["problem_id"], p["variant"]) for p in shard["problems"]]
        replicas.add(shard["meta"]["replica"])
    assert sorted(shard_ids) == sorted((p.id, v) for p in problems for v in ("base", "adapter"))  # every problem scored exactly once
    assert len(replicas) == 2  # both replicas did work

    report_dir = await store.get_dir(ev.report, tmp_path / "report")
    report = json.loads((report_dir / "report.json").read_text())
    assert len(report["problems"]) == 2 * len(problems)
    assert (report_dir / "report.html").is_file() and (report_dir / "pass_at_k.png").is_file()
    await nc.close()


async def test_unusable_requests_fail_once_with_a_clear_reason(nats_url, tmp_path):
    from lorafleet.services.evaluator.app import service

    settings = Settings(nats_url=nats_url, data_dir=tmp_path / "data")
    ref = {"uri": "obj://x/y", "sha256": "0" * 64}
    good = parse_config({"adapter_name": "a", "base_model": "tiny://random"}).model_dump(mode="json")
    no_problems = AdapterTrained(request_id="r2", adapter_name="a", version=1, adapter=ref, base_model="b", rank=8,
                                 target_modules=["q_proj"], config=good, config_sha256="c", dataset_sha256="d")
    bad_config = no_problems.model_copy(update={"event_id": "e-bad", "request_id": "r3",
                                                "config": {**good, "evaluation": {"n": 2, "k": [1, 5]}}})
    async with service.running(settings):
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        for ev in (no_problems, bad_config):
            await js.publish(ev.subject(), ev.to_bytes(), stream=STREAM, headers={"Nats-Msg-Id": ev.event_id})
        deadline = time.monotonic() + 20
        while True:
            failed = {e.request_id: e for e in await stream_events(js) if e.event_type == "stage.failed"}
            if len(failed) == 2 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        await nc.close()
    assert failed["r2"].stage == "evaluation" and not failed["r2"].retriable
    assert "no evaluation problems" in failed["r2"].error
    assert "n=2 must be >= the largest k=5" in failed["r3"].error


async def test_a_shard_whose_result_is_recorded_is_not_scored_again(nats_url, tmp_path):
    from lorafleet.services.evaluator.app import service
    from lorafleet.services.evaluator.bootstrap import KV_BUCKET
    from lorafleet.services.evaluator.shards import EvalProgress
    from lorafleet.shared.events import ArtifactRef, EvalShardRequested

    settings = Settings(nats_url=nats_url, data_dir=tmp_path / "data")
    recorded = ArtifactRef(uri="obj://lorafleet-artifacts/evaluations/e1/shard-00000.json", sha256="a" * 64)
    # the spec artifact does not exist: touching it (i.e. scoring again) would fail the shard
    spec = ArtifactRef(uri="obj://lorafleet-artifacts/evaluations/e1/spec.json", sha256="b" * 64)
    async with service.running(settings):
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        kv = await js.key_value(KV_BUCKET)
        await kv.create("eval.e1", EvalProgress(evaluation_id="e1", shard_count=2, spec=spec,
                                                done={"0": recorded}).model_dump_json().encode())
        shard = EvalShardRequested(request_id="r4", evaluation_id="e1", shard_index=0, shard_count=2,
                                   problem_ids=["p"], spec=spec)
        await js.publish(shard.subject(), shard.to_bytes(), stream=STREAM, headers={"Nats-Msg-Id": shard.event_id})
        deadline = time.monotonic() + 20
        while True:
            done = [e for e in await stream_events(js) if isinstance(e, EvalShardDone)]
            if done or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        await nc.close()
    assert len(done) == 1 and done[0].result == recorded and done[0].shard_index == 0
