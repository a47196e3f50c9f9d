"""The label mask of a real training batch, token by token (DESIGN.md correction 6)."""

from lorafleet.shared import synthetic
from lorafleet.shared.prompts import render_messages


def _trainer(tiny_dir, config, rows, tmp_path):
    from peft import get_peft_model
    from trl import SFTTrainer

    from lorafleet.services.trainer.train import datasets_for, load_base, lora_config, sft_config

    tokenizer, model = load_base(config)
    model = get_peft_model(model, lora_config(config))
    args = sft_config(config, tmp_path / "ckpt", has_eval=False)
    train_data, _, collator = datasets_for(config, tokenizer, rows, [])
    return tokenizer, SFTTrainer(model=model, args=args, train_dataset=train_data, processing_class=tokenizer,
                                 data_collator=collator)


def _expected(tokenizer, messages):
    """(ids, [start, stop) of the trained span) computed from the rendered pieces, not from the template's mask."""
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    prompt = tokenizer.apply_chat_template(messages[:2], add_generation_prompt=True, tokenize=True,
                                           return_dict=True)["input_ids"]
    answer = tokenizer.encode(messages[2]["content"], add_special_tokens=False)
    start, stop = len(prompt), len(prompt) + len(answer) + 1  # + <|im_end|>
    assert ids[:start] == prompt and ids[start:stop - 1] == answer
    return ids, start, stop


def _rows():
    problems = [synthetic.make_problem("word_bang", 7), synthetic.make_problem("list_each_mul", 12)]
    return [
        {"messages": render_messages(problems[0].statement, code=problems[0].solutions[0])},
        {"messages": render_messages(problems[1].statement, reasoning="Multiply each value.", code=problems[1].solutions[0])},
    ]


def test_pad_is_not_eos(tiny_tokenizer):
    assert tiny_tokenizer.pad_token == "<|endoftext|>"
    assert tiny_tokenizer.eos_token == "<|im_end|>"
    assert tiny_tokenizer.pad_token_id != tiny_tokenizer.eos_token_id


def test_label_mask_token_by_token(tiny_dir, tiny_config, tmp_path):
    config = tiny_config(training={"packing": False, "batch_size": 2})
    rows = _rows()
    tokenizer, trainer = _trainer(tiny_dir, config, rows, tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    ids, labels, attn = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape[0] == 2 and (attn == 0).any(), "the two rows have different lengths: one must be padded"
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    expected = [_expected(tokenizer, r["messages"]) for r in rows]
    seen = set()
    for r in range(ids.shape[0]):
        length = int(attn[r].sum())
        row_ids = ids[r, :length].tolist()
        [k] = [k for k, (e, _, _) in enumerate(expected) if e == row_ids]  # the sampler shuffles
        seen.add(k)
        _, start, stop = expected[k]
        for i in range(ids.shape[1]):
            token = tokenizer.decode([int(ids[r, i])])
            if i >= length:
                assert labels[r, i] == -100 and ids[r, i] == tokenizer.pad_token_id, f"padding at {i} is trained"
            elif start <= i < stop:
                assert labels[r, i] == ids[r, i], f"assistant token {i} {token!r} is masked"
            else:
                assert labels[r, i] == -100, f"non-assistant token {i} {token!r} (system/user/header) is trained"
        assert row_ids[stop - 1] == im_end and labels[r, stop - 1] == im_end, "<|im_end|> must be trained"
        assert sum(1 for x in labels[r].tolist() if x == im_end) == 1, "exactly one end-of-turn in the loss"
    assert seen == {0, 1}


def test_label_mask_of_bfd_rows_packing(tiny_dir, tiny_config, tmp_path):
    """Same mask when our own packing path (bfd_rows) tokenizes and labels the examples."""
    config = tiny_config(training={"packing": True, "packing_strategy": "bfd_rows", "batch_size": 2})
    rows = _rows() * 3
    tokenizer, trainer = _trainer(tiny_dir, config, rows, tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    expected = [_expected(tokenizer, r["messages"]) for r in _rows()]
    segments = 0
    for r in range(batch["input_ids"].shape[0]):
        positions, row_ids, labels = batch["position_ids"][r], batch["input_ids"][r].tolist(), batch["labels"][r].tolist()
        starts = (positions == 0).nonzero().flatten().tolist() + [len(positions)]
        for a, b in zip(starts, starts[1:]):
            if row_ids[a] == tokenizer.pad_token_id:  # right padding: never trained
                assert all(x == -100 for x in labels[a:b]) and all(t == tokenizer.pad_token_id for t in row_ids[a:b])
                continue
            [(e, start, stop)] = [x for x in expected if x[0] == row_ids[a:b]]
            for i in range(b - a):
                want = e[i] if start <= i < stop else -100
                assert labels[a + i] == want, f"token {i} {tokenizer.decode([e[i]])!r}: label {labels[a + i]}, want {want}"
            assert e[stop - 1] == im_end
            segments += 1
    assert segments >= 4


def test_examples_with_no_assistant_tokens_are_dropped_and_counted(tiny_tokenizer):
    from lorafleet.services.trainer.train import supervision_stats

    rows = _rows()
    prompt_len = len(tiny_tokenizer.apply_chat_template(rows[0]["messages"][:2], add_generation_prompt=True,
                                                        tokenize=True, return_dict=True)["input_ids"])
    kept, stats = supervision_stats(tiny_tokenizer, rows, max_length=prompt_len + 3)
    assert stats["cut_at_max_length"] + stats["dropped_too_long"] == 2
    kept, stats = supervision_stats(tiny_tokenizer, rows, max_length=prompt_len - 1)
    assert kept == [] or stats["dropped_too_long"] >= 1
    kept, stats = supervision_stats(tiny_tokenizer, rows, max_length=1024)
    assert stats == {"examples": 2, "dropped_too_long": 0, "cut_at_max_length": 0,
                     "supervised_tokens": stats["supervised_tokens"]} and stats["supervised_tokens"] > 20
