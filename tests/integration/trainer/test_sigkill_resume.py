"""SIGKILL the trainer mid-run: the redelivered job resumes from its last checkpoint in a new
process, and exactly one adapter.trained is published."""

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from trainer_helpers import stored_count, tiny_config, wait_for
from test_app import enriched


def start_trainer(settings, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "LORAFLEET_NATS_URL": settings.nats_url, "LORAFLEET_DATA_DIR": str(settings.data_dir),
           "LORAFLEET_ACK_WAIT_S": "3", "LORAFLEET_MAX_DELIVER": "5", "LORAFLEET_RETRY_DELAY_S": "0",
           "LORAFLEET_TORCH_THREADS": "1"}
    with log_path.open("ab") as log:
        return subprocess.Popen([sys.executable, "-c", "from lorafleet.cli import main; main()", "serve", "trainer"],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.slow
async def test_sigkill_mid_training_resumes_and_publishes_once(settings, js, event_log, tiny_dir, tmp_path):
    config = tiny_config(tiny_dir, training={"max_steps": 20, "save_steps": 4, "logging_steps": 1},
                         validation={"metric": "eval_loss", "eval_steps": 4, "early_stopping_patience": 0})
    log_path = tmp_path / "trainer.log"
    first = start_trainer(settings, log_path)
    second = None
    try:
        job = await enriched(js, settings, tmp_path, config)
        mine = lambda: [e for e in event_log.of("training.progress") if e.request_id == job.request_id]  # noqa: E731
        await wait_for(lambda: any(p.step >= 6 for p in mine()), timeout=150,
                       what=f"training past step 6 (log: {log_path})")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        killed_at = max(p.step for p in mine())
        assert killed_at < 20 and not event_log.of("adapter.trained")
        assert any((settings.data_dir / "trainer" / "checkpoints").rglob("checkpoint-4")), "a durable checkpoint"

        second = start_trainer(settings, log_path)
        await wait_for(lambda: event_log.of("adapter.trained"), timeout=150,
                       what=f"adapter.trained from the second trainer (log: {log_path})")
        await asyncio.sleep(2)  # room for a duplicate to show up
        [trained] = event_log.of("adapter.trained")
        assert trained.request_id == job.request_id and trained.version == 1
        assert trained.metrics["resumed_from_step"] in range(4, killed_at + 1, 4), trained.metrics
        assert trained.metrics["global_step"] == 20
        assert await stored_count(js, "adapter.trained") == 1
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
