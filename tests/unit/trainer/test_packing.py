"""Packed (bfd, padding-free) examples must not attend across their boundaries."""

import torch

from lorafleet.shared import synthetic
from lorafleet.shared.prompts import render_messages


def test_bfd_packed_rows_match_separate_examples(tiny_dir, tiny_config, tmp_path):
    from datasets import Dataset
    from peft import get_peft_model
    from trl import SFTTrainer

    from lorafleet.services.trainer.train import load_base, lora_config, sft_config

    config = tiny_config(training={"packing": True, "packing_strategy": "bfd", "batch_size": 4,
                                   "max_seq_length": 256})
    problems = [synthetic.make_problem(f, k) for f, k in [("word_bang", 3), ("list_sum_add", 9),
                                                           ("tri_add", 4), ("word_len_add", 11)]]
    rows = [{"messages": render_messages(p.statement, code=p.solutions[0])} for p in problems]
    tokenizer, model = load_base(config)
    model = get_peft_model(model, lora_config(config))
    trainer = SFTTrainer(model=model, args=sft_config(config, tmp_path / "ckpt", has_eval=False),
                         train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    assert "attention_mask" not in batch or batch["attention_mask"] is None
    positions = batch["position_ids"][0]
    starts = (positions == 0).nonzero().flatten().tolist()
    assert len(starts) >= 2, "several examples share one packed row"
    bounds = starts + [len(positions)]
    segments = [(a, b) for a, b in zip(bounds, bounds[1:]) if positions[a:b].max() > 0]
    assert len(segments) >= 2

    model.eval()
    # Perturb LoRA weights so the adapter path is exercised too.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        for a, b in segments:
            alone = model(input_ids=batch["input_ids"][:, a:b]).logits[0]
            torch.testing.assert_close(packed[a:b], alone, atol=1e-4, rtol=1e-4)
        # Control: the same row without position resets *does* mix the examples.
        mixed = model(input_ids=batch["input_ids"]).logits[0]
        a, b = segments[1]
        assert not torch.allclose(mixed[a:b], packed[a:b], atol=1e-4)
    # Labels: the first token of every example is never predicted from the previous example.
    assert all(batch["labels"][0, s] == -100 for s in starts)
