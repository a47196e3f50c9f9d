"""Durable checkpoints: retention, the config-hash rule, local checks, and the store round trip
(LocalArtifactStore: the same interface as the object store, which the integration test uses)."""

import json
import os

from lorafleet.services.trainer.checkpoints import (
    META,
    CheckpointEntry,
    DurableCheckpoints,
    Manifest,
    check_local,
    fix_up,
    resume_choice,
    retain,
)
from lorafleet.shared.artifacts import LocalArtifactStore


def entry(step, sha="a" * 64):
    return CheckpointEntry(step=step, name=f"p/checkpoint-{step}", sha256="0" * 64, size_bytes=1, config_sha256=sha)


def test_retain_keeps_the_newest_and_the_best():
    m = Manifest(job="p")
    for step in (4, 8, 12):
        m, dropped = retain(m, entry(step), keep=2, best_step=4)
    assert [e.step for e in m.checkpoints] == [4, 8, 12] and dropped == []
    m, dropped = retain(m, entry(16), keep=2, best_step=4)
    assert [e.step for e in m.checkpoints] == [4, 12, 16] and [e.step for e in dropped] == [8]
    m, dropped = retain(m, entry(20), keep=2, best_step=None)
    assert [e.step for e in m.checkpoints] == [16, 20] and [e.step for e in dropped] == [4, 12]


def test_resume_choice_refuses_another_config():
    m = Manifest(job="job-1", checkpoints=[entry(4), entry(8, sha="b" * 64)])
    chosen, why = resume_choice(m, "a" * 64)
    assert chosen is None and "checkpoint-8" in why and "bbbbbbbbbbbb" in why and "starting over at step 0" in why
    chosen, why = resume_choice(m, "b" * 64)
    assert chosen.step == 8 and why is None
    assert resume_choice(Manifest(job="x"), "a" * 64) == (None, None)


def _ckpt(root, step, sha):
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(os.urandom(64))
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step,
                                                         "best_model_checkpoint": f"/elsewhere/checkpoint-{step}"}))
    if sha:
        (path / META).write_text(json.dumps({"config_sha256": sha, "step": step, "best_step": 4}))
    return path


def test_check_local_skips_and_removes_foreign_or_incomplete_checkpoints(tmp_path):
    _ckpt(tmp_path, 4, "a" * 64)
    _ckpt(tmp_path, 8, "b" * 64)
    _ckpt(tmp_path, 12, None)
    last, why = check_local(tmp_path, "a" * 64)
    assert last == str(tmp_path / "checkpoint-4")
    assert "checkpoint-12" in why and "no lorafleet_checkpoint.json" in why
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4"]
    last, why = check_local(tmp_path, "c" * 64)
    assert last is None and "made with config aaaaaaaaaaaa" in why and not any(tmp_path.iterdir())


def test_fix_up_points_the_best_checkpoint_at_this_disk_and_orders_mtimes(tmp_path):
    _ckpt(tmp_path, 12, "a" * 64)
    _ckpt(tmp_path, 4, "a" * 64)
    fix_up(tmp_path)
    state = json.loads((tmp_path / "checkpoint-12" / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"] == str(tmp_path / "checkpoint-12")
    assert os.path.getmtime(tmp_path / "checkpoint-4") < os.path.getmtime(tmp_path / "checkpoint-12")


async def test_store_round_trip_retention_and_restore_on_an_empty_disk(tmp_path):
    store = LocalArtifactStore(tmp_path / "store")
    durable = DurableCheckpoints(store, "checkpoints/a/job-1", keep=1)
    saved = tmp_path / "replica-1"
    for step in (4, 8, 12):
        await durable.save(_ckpt(saved, step, "a" * 64))
    manifest = await durable.manifest()
    # keep 1 + the best (step 4, from lorafleet_checkpoint.json); step 8's artifact is gone
    assert [e.step for e in manifest.checkpoints] == [4, 12]
    assert not store.path_of("checkpoints/a/job-1/checkpoint-8").exists()

    empty = tmp_path / "replica-2" / "ckpt"
    step, why = await durable.restore(empty, "a" * 64)
    assert (step, why) == (12, None)
    assert sorted(p.name for p in empty.iterdir()) == ["checkpoint-12", "checkpoint-4"]
    assert (empty / "checkpoint-12" / "adapter_model.safetensors").read_bytes() == \
        (saved / "checkpoint-12" / "adapter_model.safetensors").read_bytes()
    state = json.loads((empty / "checkpoint-12" / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"] == str(empty / "checkpoint-12")

    # another config: never resumed, and the unusable checkpoints are deleted
    step, why = await durable.restore(tmp_path / "replica-3", "b" * 64)
    assert step is None and "starting over" in why
    assert (await durable.manifest()).checkpoints == []
    assert not store.path_of("checkpoints/a/job-1/checkpoint-12").exists()


def test_train_uploads_every_save_and_never_resumes_another_configs_checkpoint(tiny_config, tmp_path):
    """The app's flow with train(): each save goes to the store; an empty disk resumes the
    newest; a job whose config differs starts at step 0 and says why in its metrics."""
    import asyncio

    from lorafleet.services.trainer.train import TrainJob, train
    from lorafleet.shared import synthetic

    data = synthetic.write_dataset(tmp_path / "ds", "python", train_limit=24, eval_limit=2)
    (data / "eval.jsonl").unlink()
    fast = {"max_steps": 4, "save_steps": 2, "save_total_limit": 1, "logging_steps": 1, "batch_size": 2,
            "max_seq_length": 96}
    config = tiny_config(training=fast, data={"min_examples": 10})
    durable = DurableCheckpoints(LocalArtifactStore(tmp_path / "store"), "checkpoints/t/job", keep=1)
    train(TrainJob(config, data, tmp_path / "a", tmp_path / "replica-1",
                   on_checkpoint=lambda path: asyncio.run(durable.save(path))))
    manifest = asyncio.run(durable.manifest())
    assert [e.step for e in manifest.checkpoints] == [4] and manifest.checkpoints[0].config_sha256 == config.sha256()

    assert asyncio.run(durable.restore(tmp_path / "replica-2", config.sha256())) == (4, None)
    same = train(TrainJob(config, data, tmp_path / "b", tmp_path / "replica-2"))
    assert same.metrics["resumed_from_step"] == 4 and same.metrics["resume_refused"] is None

    other = tiny_config(training={**fast, "learning_rate": 1e-4}, data={"min_examples": 10})
    step, why = asyncio.run(durable.restore(tmp_path / "replica-3", other.sha256()))
    assert step is None and config.sha256()[:12] in why and other.sha256()[:12] in why
    progress = []
    fresh = train(TrainJob(other, data, tmp_path / "c", tmp_path / "replica-3", on_progress=progress.append,
                           resume_refused=why))
    assert fresh.metrics["resumed_from_step"] is None and fresh.metrics["resume_refused"] == why
    assert [p["step"] for p in progress] == [1, 2, 3, 4]
