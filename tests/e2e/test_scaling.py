"""Per-service scaling with real processes: 2 ingest and 3 evaluator replicas share their
durable consumers; every work item is processed exactly once and every replica works."""

from __future__ import annotations

import asyncio
import json
import time

import nats
import pytest
from nats.js.errors import NotFoundError

from lorafleet.shared import synthetic
from lorafleet.shared.artifacts import open_store
from lorafleet.shared.bus import ensure_stream, publish_event
from lorafleet.shared.config import parse_config
from lorafleet.shared.events import STREAM, AdapterTrained, TrainRequested
from lorafleet.shared.settings import Settings

from e2e_support import tiny_pipeline_config, unique_in_stream as _unique_in_stream

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

INGEST_JOBS = 4
EVAL_PROBLEMS = 6


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory):
    """A random-init tiny base and a LoRA with nonzero B (base and adapter really differ)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lorafleet.services.trainer.tiny_model import make_tiny

    root = tmp_path_factory.mktemp("tiny")
    base = make_tiny(root / "base")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM"))
    model.save_pretrained(root / "adapter")
    return base, root / "adapter"


async def _wait_waiting(js, consumer: str, replicas: int, fleet, timeout: float = 120.0) -> None:
    """Until `replicas` processes have a pull request waiting on the durable consumer."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if (await js.consumer_info(STREAM, consumer)).num_waiting >= replicas:
                return
        except NotFoundError:
            pass
        assert time.monotonic() < deadline, f"{consumer}: {replicas} replicas not all pulling\n{fleet.logs()}"
        assert len(fleet.alive()) == len(fleet.replicas), fleet.logs()
        await asyncio.sleep(0.2)


async def test_two_ingest_and_three_evaluator_replicas_process_every_item_once(
        nats_url, fleet, events, tiny_adapter, tmp_path):
    base, adapter = tiny_adapter
    settings = Settings(nats_url=nats_url, data_dir=tmp_path / "data")
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        await ensure_stream(js, settings)
        fleet.start("ingest", 2)
        fleet.start("evaluator", 3)
        await _wait_waiting(js, "ingest", 2, fleet)
        await _wait_waiting(js, "evaluator", 3, fleet)

        for i in range(INGEST_JOBS):
            cfg = tiny_pipeline_config(f"scale-{i}")
            await publish_event(js, TrainRequested(request_id=f"scale-{i}", adapter_name=f"scale-{i}", config=cfg,
                                                   config_sha256=f"s{i}"))

        problems = synthetic.lora_problems("python", "heldout")[:EVAL_PROBLEMS]
        path = tmp_path / "eval_problems.jsonl"
        path.write_text("".join(p.model_dump_json() + "\n" for p in problems))
        store = open_store(settings, js=js)
        adapter_ref = await store.put_dir(adapter, "adapters/scale-eval/v1.tar")
        problems_ref = await store.put_file(path, "datasets/scale/eval_problems.jsonl")
        config = parse_config({"adapter_name": "scale-eval", "base_model": str(base), "quantization": "none",
                               "evaluation": {"n": 2, "k": [1], "max_new_tokens": 8, "shard_size": 1, "greedy": False}})
        await publish_event(js, AdapterTrained(
            request_id="scale-eval", adapter_name="scale-eval", version=1, adapter=adapter_ref, base_model=str(base),
            rank=4, target_modules=["q_proj", "v_proj"], config=config.model_dump(mode="json"),
            config_sha256=config.sha256(), dataset_sha256="d" * 64, eval_problems=problems_ref))

        await events.wait("dataset.ready", 180, count=INGEST_JOBS, fleet=fleet)
        await events.wait("adapter.evaluated", 180, fleet=fleet)
        await asyncio.sleep(1.5)  # a second processing of any item would have published by now

        ready = await _unique_in_stream(js, "dataset.ready")
        assert sorted(e["request_id"] for e in ready) == [f"scale-{i}" for i in range(INGEST_JOBS)]
        # Processed once, not merely deduplicated on publish: each job is logged by exactly one replica.
        per_replica = [sum(r.log.read_text().count(f"ingest scale-{i}:") for i in range(INGEST_JOBS))
                       for r in fleet.of("ingest")]
        assert sum(per_replica) == INGEST_JOBS and all(n > 0 for n in per_replica), per_replica

        done = await _unique_in_stream(js, "eval.shard_done")
        assert sorted(e["shard_index"] for e in done) == list(range(EVAL_PROBLEMS))
        replicas = set()
        for e in done:
            shard = json.loads((await store.get_file(e["result"]["uri"], tmp_path / f"shard{e['shard_index']}.json")).read_text())
            replicas.add(shard["meta"]["replica"])
        assert len(replicas) == 3, f"shards went to {replicas}"
        assert len(await _unique_in_stream(js, "adapter.evaluated")) == 1
        assert "Traceback" not in "".join(r.log.read_text() for r in fleet.replicas)
    finally:
        await nc.close()
