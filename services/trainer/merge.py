"""Merge a LoRA adapter into its base and prove the merge is right before keeping it.

Broken merges (wrong base, dtype loss, modules_to_save dropped, tied embeddings
saved wrong) are a top complaint about existing tools: the merged weights are
re-loaded from disk and their logits compared with base+adapter on a probe batch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.prompts import render_messages

PROBE_STATEMENTS = (
    "Read a line of integers. Print their sum plus 3.",
    "Read a word. Print it repeated 2 times.",
    "Read two integers a and b. Print the larger of them plus 5.",
    "Given n, print the n-th Fibonacci number.",
)


class MergeError(LorafleetError):
    pass


def probe_batch(tokenizer, max_length: int = 128):
    texts = [tokenizer.apply_chat_template(render_messages(s, code="print(1)"), tokenize=False)
             for s in PROBE_STATEMENTS]
    return tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length,
                     add_special_tokens=False)


def _logits(model, batch):
    import torch

    with torch.no_grad():
        out = model(**batch).logits.float()
    return out[batch["attention_mask"].bool()]


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, base_model: str | None = None,
                  tolerance: float = 1e-3, dtype: str = "float32") -> dict[str, Any]:
    """Write base+adapter merged into `out_dir` (model + tokenizer, saved in `dtype`); raise
    MergeError and write nothing when the re-loaded merged model's logits differ from
    base+adapter (computed in float32) by more than `tolerance` x the logit scale."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorafleet.services.trainer.tiny_model import resolve_base_model

    adapter_dir, out = Path(adapter_dir), Path(out_dir)
    cfg_path = adapter_dir / "adapter_config.json"
    if not cfg_path.is_file():
        raise MergeError(f"{adapter_dir} has no adapter_config.json: pass a peft adapter directory")
    adapter_cfg = json.loads(cfg_path.read_text())
    base = resolve_base_model(base_model or adapter_cfg.get("base_model_name_or_path") or "")
    if not base:
        raise MergeError(f"{cfg_path} names no base model: pass --base")
    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    except OSError as exc:
        raise MergeError(f"cannot load base model {base!r}: {exc}; pass --base with a local path") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    peft_model = PeftModel.from_pretrained(model, str(adapter_dir))
    peft_model.eval()
    batch = probe_batch(tokenizer)
    reference = _logits(peft_model, batch)

    if dtype not in ("float32", "bfloat16", "float16"):
        raise MergeError(f"dtype {dtype!r}: use float32, bfloat16 or float16")
    merged = peft_model.merge_and_unload().to(getattr(torch, dtype))
    tmp = out.with_name(out.name + ".merging")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=getattr(torch, dtype)).eval()
    got = _logits(reloaded, batch)
    diff = (got - reference).abs().max().item()
    scale = max(reference.abs().max().item(), 1.0)
    report = {"max_abs_diff": diff, "logit_scale": scale, "tolerance": tolerance,
              "probe_tokens": int(batch["attention_mask"].sum()), "base_model": base, "dtype": dtype,
              "adapter": str(adapter_dir)}
    if not diff <= tolerance * scale:  # also catches NaN
        shutil.rmtree(tmp, ignore_errors=True)
        raise MergeError(
            f"merged model ({dtype}) disagrees with base+adapter: max |Δlogit| {diff:.3g} > {tolerance:g} x "
            f"{scale:.3g}; nothing was written (merge in float32, or raise --tolerance if the loss is acceptable)"
        )
    (tmp / "merge_report.json").write_text(json.dumps(report, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return report
