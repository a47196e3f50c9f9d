"""The QLoRA path (4-bit NF4, double quantisation, bf16 compute, k-bit preparation, gradient
checkpointing) on bitsandbytes' CPU kernels (in the cpu install):
the base really is 4-bit, training lowers the loss, and the adapter merges into the full base."""

import pytest

from lorafleet.services.trainer.train import TrainJob, load_base, train
from lorafleet.shared import synthetic


@pytest.mark.slow
def test_nf4_base_trains_a_lora_that_merges(tiny_config, tmp_path):
    import bitsandbytes as bnb
    import torch

    from lorafleet.services.trainer.merge import merge_adapter

    config = tiny_config(quantization="nf4", data={"min_examples": 10},
                         training={"max_steps": 4, "save_steps": 4, "logging_steps": 1, "batch_size": 2,
                                   "max_seq_length": 96, "learning_rate": 1e-2, "gradient_checkpointing": True})
    _, model = load_base(config)
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == 4 * 7, "every attention and MLP projection of the 4 layers is 4-bit"
    state = quantized[0].weight.quant_state
    assert state.quant_type == "nf4" and state.nested, "NF4 with double quantisation"
    assert quantized[0].compute_dtype == torch.bfloat16
    del model

    data = synthetic.write_dataset(tmp_path / "ds", "python", train_limit=24, eval_limit=2)
    (data / "eval.jsonl").unlink()
    progress = []
    result = train(TrainJob(config, data, tmp_path / "adapter", tmp_path / "ckpt", on_progress=progress.append))
    losses = [p["loss"] for p in progress]
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    report = merge_adapter(result.output_dir, tmp_path / "merged")
    assert report["max_abs_diff"] <= 1e-3 * report["logit_scale"]
