"""The trainer service on a real nats-server: dataset.enriched -> progress -> adapter.trained."""

import json
import uuid

import pytest

from lorafleet.services.trainer.app import service
from lorafleet.shared import synthetic
from lorafleet.shared.artifacts import open_store
from lorafleet.shared.bus import publish_event
from lorafleet.shared.events import DatasetEnriched

from trainer_helpers import stored_count, tiny_config, wait_for


async def enriched(js, settings, tmp_path, config, train_limit=40):
    ds = synthetic.write_dataset(tmp_path / f"ds-{uuid.uuid4().hex[:6]}", "python", train_limit=train_limit, eval_limit=3)
    ref = await open_store(settings, js=js).put_dir(ds, f"datasets/{uuid.uuid4().hex}")
    request = str(uuid.uuid4())
    event = DatasetEnriched(request_id=request, adapter_name=config.adapter_name, dataset=ref,
                            config=config.model_dump(mode="json"), config_sha256=config.sha256())
    await publish_event(js, event)
    return event


async def test_trains_publishes_progress_and_one_adapter(settings, js, event_log, tiny_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    too_small = tiny_config(tiny_dir, data={"min_examples": 500})
    config = tiny_config(tiny_dir)
    async with service.running(settings):
        bad = await enriched(js, settings, tmp_path, too_small)
        good = await enriched(js, settings, tmp_path, config)
        await wait_for(lambda: event_log.of("adapter.trained"), timeout=120, what="adapter.trained")

    [failed] = event_log.of("training.failed")
    assert failed.input_event_id == bad.event_id and not failed.retriable
    assert "40 training examples, fewer than data.min_examples=500" in failed.error

    [trained] = event_log.of("adapter.trained")
    assert trained.request_id == good.request_id and trained.version == 1
    assert trained.rank == 16 and trained.lora_alpha == 32 and "q_proj" in trained.target_modules
    assert trained.config_sha256 == config.sha256() and trained.dataset_sha256 == good.dataset.sha256
    assert trained.metrics["global_step"] == 8 and trained.eval_problems is not None

    progress = [e for e in event_log.of("training.progress") if e.request_id == good.request_id]
    assert [p.step for p in progress if p.loss is not None] == [2, 4, 6, 8]
    assert all(p.total_steps == 8 and p.learning_rate is not None for p in progress if p.loss is not None)
    assert any(p.eval_pass_at_1 is not None for p in progress)

    # The artifact is a peft-loadable adapter directory.
    dest = await open_store(settings, js=js).get_dir(trained.adapter, tmp_path / "got")
    cfg = json.loads((dest / "adapter_config.json").read_text())
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(cfg["base_model_name_or_path"]), str(dest))
    assert json.loads((dest / "training_summary.json").read_text())["metrics"]["global_step"] == 8
    assert await stored_count(js, "adapter.trained") == 1
    # the work dirs and checkpoints of a finished job are cleaned up
    assert not any((settings.data_dir / "trainer" / "checkpoints").rglob("checkpoint-*"))


async def test_more_processes_than_the_machine_has_fails_before_anything_starts(settings, js, event_log, tiny_dir,
                                                                                tmp_path):
    from lorafleet.services.trainer.distributed import available_processes

    have, what = available_processes()
    config = tiny_config(tiny_dir, training={"processes": have + 1})
    async with service.running(settings):
        bad = await enriched(js, settings, tmp_path, config)
        await wait_for(lambda: event_log.of("training.failed"), timeout=60, what="training.failed")
    [failed] = event_log.of("training.failed")
    assert failed.input_event_id == bad.event_id and not failed.retriable
    assert f"training.processes={have + 1}, but this machine has {have} {what}" in failed.error
    assert not (settings.data_dir / "trainer" / "jobs" / bad.event_id).exists(), "nothing was downloaded"
    assert not event_log.of("training.progress")


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_two_processes_through_the_bus_publish_one_adapter_and_one_set_of_progress(settings, js, event_log,
                                                                                         tiny_dir, tmp_path):
    config = tiny_config(tiny_dir, training={"processes": 2, "max_steps": 4, "save_steps": 2, "logging_steps": 1,
                                             "batch_size": 1},
                         validation={"metric": "eval_loss", "eval_steps": 2, "early_stopping_patience": 0})
    async with service.running(settings):
        job = await enriched(js, settings, tmp_path, config)
        await wait_for(lambda: event_log.of("adapter.trained") or event_log.of("training.failed"), timeout=400,
                       what="adapter.trained")
    assert not event_log.of("training.failed")
    [trained] = event_log.of("adapter.trained")
    assert trained.metrics["world_size"] == 2 and trained.metrics["global_batch_size"] == 2
    assert trained.metrics["global_step"] == 4 and trained.metrics["checkpoint_upload_failures"] == 0
    progress = [e for e in event_log.of("training.progress") if e.request_id == job.request_id]
    assert [p.step for p in progress if p.loss is not None] == [1, 2, 3, 4], "rank 0 alone reports"
    assert [p.step for p in progress if p.eval_loss is not None] == [2, 4]
    assert await stored_count(js, "adapter.trained") == 1
