"""`bfd_rows` packing: TRL's best-fit-decreasing bins, each bin kept as its own batch row.

TRL's `bfd` is padding-free: the whole batch becomes ONE row of batch x max_length
tokens with a block-diagonal mask. With varlen flash attention (GPU) that costs
nothing extra; with SDPA on CPU the mask is dense, so attention grows with
(batch x max_length)^2 (measured here: slower than no packing at all). Keeping
each bin as a row, with position ids reset at every example and no attention
mask, makes transformers build the block-diagonal mask per row instead
(masking_utils.find_packed_sequence_indices): batch x max_length^2, the same
isolation between examples, and a few pad tokens at row ends.
"""

from __future__ import annotations

from typing import Any

from trl.trainer.sft_trainer import DataCollatorForLanguageModeling


class RowPackedCollator(DataCollatorForLanguageModeling):
    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        super().__init__(pad_token_id=pad_token_id, padding_free=False, return_position_ids=True,
                         pad_to_multiple_of=pad_to_multiple_of)

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        out = super().torch_call(examples)
        # Without an attention mask the model derives per-row blocks from the position resets;
        # right-padding (position 0, label -100) sits after every real token, so causality hides it.
        del out["attention_mask"]
        # The first token of an example is never predicted from the previous example's tokens.
        out["labels"][out["position_ids"] == 0] = -100
        return out


def tokenize_with_labels(tokenizer, rows: list[dict], max_length: int) -> list[dict[str, list[int]]]:
    """Chat rows -> input_ids + labels (assistant tokens incl. <|im_end|> trained, the rest -100),
    cut at max_length. The same mask `assistant_only_loss` builds, from the same template."""
    out = []
    for row in rows:
        enc = tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        ids, mask = enc["input_ids"][:max_length], enc["assistant_masks"][:max_length]
        if any(mask):
            out.append({"input_ids": ids, "labels": [t if m else -100 for t, m in zip(ids, mask)]})
    return out


def pack_rows(tokenizer, rows: list[dict], max_length: int, seed: int):
    """A dataset of bfd bins (input_ids, labels, seq_lengths) for RowPackedCollator."""
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    tokenized = Dataset.from_list(tokenize_with_labels(tokenizer, rows, max_length))
    return pack_dataset(tokenized, max_length, strategy="bfd").shuffle(seed=seed)
