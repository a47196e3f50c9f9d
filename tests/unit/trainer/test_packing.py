"""Packed examples must not attend across their boundaries: bfd (padding-free, one row) and
bfd_rows (the same bins, one row each)."""

import pytest
import torch

from lorafleet.shared import synthetic
from lorafleet.shared.prompts import render_messages


def _segments(positions: torch.Tensor, labels: torch.Tensor) -> list[tuple[int, int]]:
    """[start, stop) of each example in one row (pads are label -100 and position 0)."""
    starts = (positions == 0).nonzero().flatten().tolist() + [len(positions)]
    return [(a, b) for a, b in zip(starts, starts[1:]) if b - a > 1]


@pytest.mark.parametrize("strategy", ["bfd", "bfd_rows"])
def test_packed_rows_match_separate_examples(strategy, tiny_dir, tiny_config, tmp_path):
    from peft import get_peft_model
    from trl import SFTTrainer

    from lorafleet.services.trainer.train import datasets_for, load_base, lora_config, sft_config

    config = tiny_config(training={"packing": True, "packing_strategy": strategy, "batch_size": 2,
                                   "max_seq_length": 256})
    pairs = [("word_bang", 3), ("list_sum_add", 9), ("tri_add", 4), ("word_len_add", 11), ("summod", 7),
             ("list_each_mul", 5), ("absdiff_mul", 8), ("word_repeat", 2)]
    rows = [{"messages": render_messages(p.statement, code=p.solutions[0])}
            for p in (synthetic.make_problem(f, k) for f, k in pairs)]
    tokenizer, model = load_base(config)
    model = get_peft_model(model, lora_config(config))
    train_data, _, collator = datasets_for(config, tokenizer, rows, [])
    trainer = SFTTrainer(model=model, args=sft_config(config, tmp_path / "ckpt", has_eval=False),
                         train_dataset=train_data, processing_class=tokenizer, data_collator=collator)
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch.get("attention_mask") is None, "a 2D attention mask would hide the packing from the model"
    assert batch["input_ids"].shape[0] == (1 if strategy == "bfd" else 2)

    model.eval()
    with torch.no_grad():
        for name, p in model.named_parameters():  # exercise the adapter path too
            if "lora_B" in name:
                p.normal_(0, 0.02)
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        checked = 0
        for r in range(batch["input_ids"].shape[0]):
            segments = _segments(batch["position_ids"][r], batch["labels"][r])
            assert len(segments) >= 2, "several examples share a row"
            for a, b in segments:
                alone = model(input_ids=batch["input_ids"][r:r + 1, a:b]).logits[0]
                torch.testing.assert_close(packed[r, a:b], alone, atol=1e-4, rtol=1e-4)
                assert batch["labels"][r, a] == -100, "an example's first token is not predicted from the previous one"
                checked += 1
            # Control: the same row without position resets *does* mix the examples.
            a, b = segments[1]
            mixed = model(input_ids=batch["input_ids"][r:r + 1]).logits[0]
            assert not torch.allclose(mixed[a:b], packed[r, a:b], atol=1e-4)
    assert checked >= 4
