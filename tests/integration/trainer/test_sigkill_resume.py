"""Two trainer replicas with separate data directories on one nats-server. SIGKILL the one
holding the job after its first durable checkpoint: the other, with an empty disk, fetches the
checkpoint from the object store, resumes at its step, and its result equals an uninterrupted
run with the same seed (every step's loss, and the final adapter within float tolerance)."""

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lorafleet.services.trainer.checkpoints import DurableCheckpoints
from lorafleet.shared.artifacts import open_store
from lorafleet.shared.settings import Settings

from trainer_helpers import stored_count, tiny_config, wait_for
from test_app import enriched


def start_trainer(settings: Settings, data_dir: Path, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "LORAFLEET_NATS_URL": settings.nats_url, "LORAFLEET_DATA_DIR": str(data_dir),
           "LORAFLEET_ACK_WAIT_S": "3", "LORAFLEET_MAX_DELIVER": "5", "LORAFLEET_RETRY_DELAY_S": "0",
           "LORAFLEET_TORCH_THREADS": "1"}
    with log_path.open("ab") as log:
        return subprocess.Popen([sys.executable, "-c", "from lorafleet.cli import main; main()", "serve", "trainer"],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def adapter_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


@pytest.mark.slow
async def test_sigkilled_job_resumes_on_another_replica_from_the_object_store(settings, js, event_log, tiny_dir,
                                                                              tmp_path):
    import torch

    from lorafleet.services.trainer.train import TrainJob, train

    config = tiny_config(tiny_dir, training={"max_steps": 12, "save_steps": 4, "logging_steps": 1},
                         validation={"metric": "eval_loss", "eval_steps": 4, "early_stopping_patience": 0})
    replicas = {name: tmp_path / f"replica-{name}" for name in "ab"}
    log_path = tmp_path / "trainers.log"
    procs = {name: start_trainer(settings, data, log_path) for name, data in replicas.items()}
    try:
        job = await enriched(js, settings, tmp_path, config)
        durable = DurableCheckpoints(open_store(settings, js=js), f"checkpoints/{config.adapter_name}/{job.event_id}", 2)

        async def first_checkpoint() -> bool:
            return bool((await durable.manifest()).checkpoints)

        deadline = asyncio.get_running_loop().time() + 240
        while not await first_checkpoint():
            assert asyncio.get_running_loop().time() < deadline, f"no durable checkpoint (log: {log_path})"
            await asyncio.sleep(0.1)
        [holder] = [n for n, data in replicas.items() if (data / "trainer" / "jobs" / job.event_id).exists()]
        os.killpg(procs[holder].pid, signal.SIGKILL)
        procs[holder].wait(timeout=10)
        assert not event_log.of("adapter.trained"), "killed before the end"
        saved = [e.step for e in (await durable.manifest()).checkpoints]
        other = "b" if holder == "a" else "a"
        assert not (replicas[other] / "trainer" / "checkpoints").exists() or \
            not any((replicas[other] / "trainer" / "checkpoints").rglob("checkpoint-*")), "the other disk is empty"

        await wait_for(lambda: event_log.of("adapter.trained"), timeout=240,
                       what=f"adapter.trained from replica {other} (log: {log_path})")
        await asyncio.sleep(1)  # room for a duplicate to show up
        [trained] = event_log.of("adapter.trained")
        assert trained.request_id == job.request_id and trained.version == 1
        resumed = trained.metrics["resumed_from_step"]
        assert resumed is not None and resumed >= 4 and resumed in saved, (trained.metrics, saved)
        assert trained.metrics["global_step"] == 12 and trained.metrics["resume_refused"] is None
        assert await stored_count(js, "adapter.trained") == 1
        got = await open_store(settings, js=js).get_dir(trained.adapter, tmp_path / "got")
        assert not (await durable.manifest()).checkpoints, "a finished job's checkpoints are deleted"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    # The uninterrupted run, same seed and data, in this process.
    [dataset] = [p for p in tmp_path.glob("ds-*") if p.is_dir()]
    reference = []
    ref = train(TrainJob(config, dataset, tmp_path / "ref", tmp_path / "ref_ckpt", on_progress=reference.append))
    ref_loss = {p["step"]: p["loss"] for p in reference if "loss" in p}
    # The loss curve from the bus (both replicas; a replayed step has the same event id, so it is
    # stored once) is continuous and equals the uninterrupted one.
    seen = {p.step: p.loss for p in event_log.of("training.progress") if p.request_id == job.request_id and p.loss}
    assert sorted(seen) == list(range(1, 13))
    assert seen == pytest.approx(ref_loss, rel=1e-4)
    assert trained.metrics["train_loss"] is not None and ref.metrics["global_step"] == 12
    mine, theirs = adapter_tensors(got), adapter_tensors(ref.output_dir)
    assert mine.keys() == theirs.keys() and mine
    for name in mine:
        torch.testing.assert_close(mine[name], theirs[name], rtol=1e-4, atol=1e-5, msg=name)
