"""One job on 2 torchrun processes (DDP, gloo on CPU) against one process with the same
global batch: the same loss at every step, one adapter, one set of progress reports."""

import json
import re

import pytest

from lorafleet.services.trainer.distributed import available_processes, check_processes, run_distributed
from lorafleet.services.trainer.train import TrainJob, train
from lorafleet.shared import synthetic
from lorafleet.shared.errors import ConfigError

STEPS = 20
# lora_dropout 0: each process draws its own dropout masks, so with dropout the runs differ by design.
COMMON = {"max_steps": STEPS, "save_steps": 10, "save_total_limit": 1, "logging_steps": 1, "max_seq_length": 96,
          "gradient_accumulation_steps": 1, "packing": True}


def test_more_processes_than_the_machine_has_is_a_config_error():
    have, what = available_processes()
    check_processes(have)
    with pytest.raises(ConfigError, match=re.escape(f"training.processes={have + 1}, but this machine has {have} {what}")):
        check_processes(have + 1)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_processes_match_one_process_with_the_same_global_batch(tiny_config, tmp_path):
    data = synthetic.write_dataset(tmp_path / "ds", "python", train_limit=48, eval_limit=2)
    (data / "eval.jsonl").unlink()  # no evaluation: the comparison is the training loss
    lora = {"lora_dropout": 0.0}

    def config(batch_size, processes):
        c = tiny_config(training={**COMMON, "batch_size": batch_size, "processes": processes},
                        data={"min_examples": 10})
        return c.model_copy(update={"lora": c.lora.model_copy(update=lora)})

    single = []
    one = train(TrainJob(config(2, 1), data, tmp_path / "one", tmp_path / "one_ckpt", on_progress=single.append))

    progress, saved = [], []
    job = TrainJob(config(1, 2), data, tmp_path / "two", tmp_path / "two_ckpt", on_progress=progress.append,
                   on_checkpoint=saved.append)
    two = run_distributed(job, 2)

    assert two.metrics["world_size"] == 2 and two.metrics["global_batch_size"] == 2
    assert one.metrics["world_size"] == 1 and one.metrics["global_batch_size"] == 2
    assert [p["step"] for p in progress] == list(range(1, STEPS + 1)), "rank 0 alone reports, once per step"
    single_loss = [p["loss"] for p in single]
    assert [p["loss"] for p in progress] == pytest.approx(single_loss, rel=2e-3)
    # rank 0 handed each checkpoint on, with every rank's RNG state in it
    assert [p.name for p in saved] == ["checkpoint-10", "checkpoint-20"]
    assert {"rng_state_0.pth", "rng_state_1.pth", "lorafleet_checkpoint.json"} <= \
        {f.name for f in (tmp_path / "two_ckpt" / "checkpoint-20").iterdir()}
    meta = json.loads((tmp_path / "two_ckpt" / "checkpoint-20" / "lorafleet_checkpoint.json").read_text())
    assert meta["world_size"] == 2 and meta["samples_seen"] == 40
    # one adapter, written by rank 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("two")) == ["two", "two_ckpt"]
    assert (two.output_dir / "adapter_model.safetensors").is_file() and two.rank == 16


@pytest.mark.timeout(600)
def test_a_workers_business_error_comes_back_as_itself(tiny_config, tmp_path):
    from lorafleet.services.trainer.train import TooFewExamples

    data = synthetic.write_dataset(tmp_path / "ds", "python", train_limit=12, eval_limit=2)
    config = tiny_config(training={**COMMON, "processes": 2}, data={"min_examples": 500})
    with pytest.raises(TooFewExamples, match="12 training examples, fewer than data.min_examples=500"):
        run_distributed(TrainJob(config, data, tmp_path / "out", tmp_path / "ckpt"), 2)
    assert not (tmp_path / "out").exists()
