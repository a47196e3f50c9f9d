"""train() end to end on the random-init tiny model: adapter, pass@1 early stopping, resume."""

import json

import pytest

from lorafleet.services.trainer.train import TooFewExamples, TrainJob, train
from lorafleet.shared import synthetic

FAST = {"max_steps": 40, "save_steps": 4, "logging_steps": 2, "batch_size": 2, "max_seq_length": 128}
VALIDATION = {"eval_steps": 4, "pass_at_1_problems": 3, "max_new_tokens": 16, "early_stopping_patience": 1}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return synthetic.write_dataset(tmp_path_factory.mktemp("ds") / "ds", "python", train_limit=60, eval_limit=4)


def test_adapter_ships_best_checkpoint_and_stops_early_on_pass_at_1(tiny_config, dataset, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = tiny_config(training=FAST, validation=VALIDATION, data={"min_examples": 10})
    progress = []
    result = train(TrainJob(config, dataset, tmp_path / "adapter", tmp_path / "ckpt", on_progress=progress.append))

    m = result.metrics
    # A random model scores pass@1 = 0 at every evaluation: no improvement after the first
    # evaluation, so patience 1 stops at the second, and the first (best) checkpoint ships.
    assert m["metric"] == "pass_at_1" and m["eval_pass_at_1"] == 0.0
    assert m["stopped_early"] and m["global_step"] == 8 and m["best_checkpoint"] == "checkpoint-4"
    assert [h["step"] for h in m["eval_history"]] == [4, 8]
    assert m["examples"] == 60 and m["supervised_tokens"] > 0

    out = result.output_dir
    assert {"adapter_config.json", "adapter_model.safetensors", "training_summary.json"} <= {p.name for p in out.iterdir()}
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert result.rank == cfg["r"] == 16 and result.lora_alpha == 32
    assert set(result.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    base = AutoModelForCausalLM.from_pretrained(cfg["base_model_name_or_path"])
    model = PeftModel.from_pretrained(base, str(out))
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) == m["trainable_parameters"]

    steps = [p["step"] for p in progress if "loss" in p]
    assert steps == sorted(steps) and steps[0] == 2 and all(p["total_steps"] == 40 for p in progress)
    assert any(p.get("eval_pass_at_1") == 0.0 for p in progress)
    assert all(p["tokens_per_second"] > 0 for p in progress if "loss" in p)


def test_crashed_run_resumes_at_the_checkpoint_with_the_same_data_order(tiny_config, dataset, tmp_path):
    config = tiny_config(training={**FAST, "max_steps": 8, "logging_steps": 1}, validation={"metric": "eval_loss"},
                         data={"min_examples": 10})
    no_eval = dataset.parent / "no_eval"
    if not no_eval.exists():
        no_eval.mkdir()
        (no_eval / "train.jsonl").write_text((dataset / "train.jsonl").read_text())

    reference = []
    train(TrainJob(config, no_eval, tmp_path / "ref", tmp_path / "ref_ckpt", on_progress=reference.append))

    class Crash(Exception):
        pass

    def crash_at_6(fields):
        if fields["step"] >= 6:
            raise Crash()

    with pytest.raises(Crash):
        train(TrainJob(config, no_eval, tmp_path / "adapter", tmp_path / "ckpt", on_progress=crash_at_6))
    assert not (tmp_path / "adapter").exists(), "nothing ships from a crashed run"
    resumed = []
    result = train(TrainJob(config, no_eval, tmp_path / "adapter", tmp_path / "ckpt", on_progress=resumed.append))
    assert result.resumed_from_step == 4 and result.metrics["global_step"] == 8
    assert [p["step"] for p in resumed] == [5, 6, 7, 8]
    ref_losses = {p["step"]: p["loss"] for p in reference}
    assert [round(p["loss"], 4) for p in resumed] == [round(ref_losses[s], 4) for s in (5, 6, 7, 8)]


def test_too_few_examples_names_the_count(tiny_config, dataset, tmp_path):
    config = tiny_config(data={"min_examples": 1000})
    with pytest.raises(TooFewExamples, match="60 training examples, fewer than data.min_examples=1000"):
        train(TrainJob(config, dataset, tmp_path / "a", tmp_path / "c"))


def test_out_of_gpu_memory_is_a_clear_non_retriable_error(tiny_config, dataset, tmp_path, monkeypatch):
    import torch
    from trl import SFTTrainer

    from lorafleet.services.trainer.train import OutOfMemory

    def oom(self, *args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(SFTTrainer, "train", oom)  # no GPU here: the allocator's error is what we map
    config = tiny_config(training=FAST, validation=VALIDATION, data={"min_examples": 10})
    with pytest.raises(OutOfMemory, match="batch_size=2, max_seq_length=128: lower training.batch_size"):
        train(TrainJob(config, dataset, tmp_path / "a", tmp_path / "c"))
