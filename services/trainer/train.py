"""One training run, top to bottom: data -> model -> LoRA -> SFTTrainer -> adapter dir.

Pure of the bus: `train(job)` takes paths and a config, calls `on_progress` with
plain dicts, and returns a `TrainResult`. The app runs it in a worker thread.

GPU path: 4-bit NF4 (double quant, bf16 compute) + k-bit preparation + gradient
checkpointing + paged 8-bit AdamW. CPU path: the same code with quantization
"none", fp32 and torch AdamW (bitsandbytes' paged optimizers need CUDA).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lorafleet.shared.config import TrainConfig
from lorafleet.shared.errors import ConfigError, LorafleetError
from lorafleet.shared.problems import Problem, TrainExample
from lorafleet.shared.prompts import render_messages

log = logging.getLogger(__name__)
# bitsandbytes (in the CPU install too) warns at import that the optional `kernels` package is
# missing; its CPU 4-bit ops then use their torch fallback, which is what the CPU tests run.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

ProgressFn = Callable[[dict[str, Any]], None]


class TooFewExamples(LorafleetError):
    """Not retriable: the same dataset will be too small next time too."""


class OutOfMemory(LorafleetError):
    """Not retriable with the same config: the message says which knob to turn."""


@dataclass
class TrainJob:
    config: TrainConfig
    dataset_dir: Path  # train.jsonl, eval.jsonl, eval_problems.jsonl
    output_dir: Path  # the adapter directory that ships
    checkpoint_dir: Path  # durable; a rerun with the same dir resumes
    on_progress: ProgressFn | None = None
    judge: Callable | None = None  # judge_many-compatible; None = the sandbox's
    # Called with each saved checkpoint directory (rank 0), before training goes on: the durable upload.
    on_checkpoint: Callable[[Path], None] | None = None
    # Why a durable checkpoint of this job was not resumed (another config hash), to report.
    resume_refused: str | None = None


@dataclass
class TrainResult:
    output_dir: Path
    metrics: dict[str, Any]
    resumed_from_step: int | None
    rank: int
    lora_alpha: float
    target_modules: list[str] = field(default_factory=list)


def world() -> tuple[int, int]:
    """(rank, world size) of this process: torchrun sets RANK / WORLD_SIZE."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


# --------------------------------------------------------------------------- data


def read_jsonl(path: Path, model: type) -> list:
    if not path.is_file():
        return []
    return [model.model_validate_json(line) for line in path.read_text().splitlines() if line.strip()]


def to_messages(example: TrainExample) -> dict[str, list[dict[str, str]]]:
    return {"messages": render_messages(example.statement, example.starter_code, example.reasoning, example.code)}


def supervision_stats(tokenizer, rows: list[dict], max_length: int) -> tuple[list[dict], dict[str, int]]:
    """Drop examples whose assistant turn starts past max_length (they would train on
    nothing) and count the ones cut short; bfd truncates silently otherwise."""
    kept, dropped, cut, supervised = [], 0, 0, 0
    for row in rows:
        enc = tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        mask = enc["assistant_masks"]
        inside = sum(mask[:max_length])
        if inside == 0:
            dropped += 1
            continue
        if inside < sum(mask):
            cut += 1
        supervised += inside
        kept.append(row)
    return kept, {"examples": len(kept), "dropped_too_long": dropped, "cut_at_max_length": cut,
                  "supervised_tokens": supervised}


# --------------------------------------------------------------------------- model


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def bitsandbytes_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def load_base(config: TrainConfig):
    """Tokenizer + base model, 4-bit NF4 on GPU when the config asks for it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorafleet.services.trainer.tiny_model import resolve_base_model

    path = resolve_base_model(config.base_model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        # pad == eos would mask the end-of-turn token out of the loss (DESIGN.md correction 6)
        raise ConfigError(
            f"base_model {config.base_model}: its tokenizer pads with the EOS token; give it a distinct pad token"
        )
    gpu = cuda_available()
    kwargs: dict[str, Any] = {}
    if config.quantization == "nf4":
        if not gpu and not bitsandbytes_available():
            raise ConfigError(
                f"quantization: nf4 needs bitsandbytes (the `gpu` extra) and normally a CUDA GPU; set "
                f"`quantization: none` to train {config.base_model} on CPU"
            )
        if not gpu:
            log.warning("quantization nf4 without CUDA: bitsandbytes' CPU kernels (slow; meant for tests)")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["dtype"] = torch.bfloat16
        # 4-bit weights can't be moved after loading: place them now (LOCAL_RANK under torchrun/accelerate).
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))} if gpu else "cpu"
    elif gpu and config.training.bf16:
        kwargs["dtype"] = torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if config.quantization == "nf4":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.training.gradient_checkpointing
        )
    return tokenizer, model


def lora_config(config: TrainConfig):
    from peft import LoraConfig

    lora = config.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.lora_alpha,
        lora_dropout=lora.lora_dropout,
        target_modules=lora.target_modules,
        bias=lora.bias,
        task_type=lora.task_type,
        use_rslora=lora.use_rslora,
        use_dora=lora.use_dora,
        modules_to_save=lora.modules_to_save,
    )


def sft_config(config: TrainConfig, checkpoint_dir: Path, has_eval: bool):
    from trl import SFTConfig

    t, v = config.training, config.validation
    gpu = cuda_available()
    optim = t.optim
    if not gpu and ("8bit" in optim or "paged" in optim):
        optim = "adamw_torch"  # paged memory is a CUDA feature; on CPU plain AdamW is the honest choice
    evaluate = has_eval
    if evaluate and t.save_steps % v.eval_steps != 0:
        raise ConfigError(
            f"training.save_steps={t.save_steps} must be a multiple of validation.eval_steps={v.eval_steps}, "
            "so the best evaluated checkpoint is on disk to ship"
        )
    rows_packed = t.packing and t.packing_strategy == "bfd_rows"  # datasets_for() packs and labels itself
    return SFTConfig(
        output_dir=str(checkpoint_dir),
        num_train_epochs=t.num_epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # TRL 1.x: a float < 1 is a ratio
        weight_decay=t.weight_decay,
        max_length=t.max_seq_length,
        gradient_checkpointing=t.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        optim=optim,
        bf16=t.bf16 and gpu,
        use_cpu=not gpu,
        packing=t.packing and not rows_packed,
        packing_strategy="bfd" if rows_packed else t.packing_strategy,
        assistant_only_loss=not rows_packed,
        seed=t.seed,
        data_seed=t.seed,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        # LoRA on every targeted linear layer: all trainable parameters get gradients each step.
        ddp_find_unused_parameters=False,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=v.eval_steps,
        load_best_model_at_end=evaluate,
        metric_for_best_model=("eval_pass_at_1" if v.metric == "pass_at_1" else "eval_loss") if evaluate else None,
        greater_is_better=v.metric == "pass_at_1",
        logging_steps=t.logging_steps,
        include_num_input_tokens_seen="non_padding",
        report_to=[],
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def datasets_for(config: TrainConfig, tokenizer, rows: list[dict], eval_rows: list[dict]):
    """Train/eval datasets and collator. `bfd_rows` packs here (TRL refuses a custom collator
    with its padding-free bfd); the other strategies hand chat rows to SFTTrainer."""
    from datasets import Dataset

    t = config.training
    if t.packing and t.packing_strategy == "bfd_rows":
        from lorafleet.services.trainer.packing import RowPackedCollator, pack_rows

        return (pack_rows(tokenizer, rows, t.max_seq_length, t.seed),
                pack_rows(tokenizer, eval_rows, t.max_seq_length, t.seed) if eval_rows else None,
                RowPackedCollator(tokenizer.pad_token_id))
    return Dataset.from_list(rows), (Dataset.from_list(eval_rows) if eval_rows else None), None


# --------------------------------------------------------------------------- run


def train(job: TrainJob) -> TrainResult:
    import torch
    from peft import get_peft_model
    from transformers import EarlyStoppingCallback, set_seed
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer

    from lorafleet.services.trainer.callbacks import CheckpointCallback, PassAtOneCallback, ProgressCallback
    from lorafleet.services.trainer.checkpoints import check_local
    from lorafleet.services.trainer.tiny_model import configure_cpu_threads

    config = job.config
    t, v = config.training, config.validation
    configure_cpu_threads()
    rank, world_size = world()
    config_sha = config.sha256()

    # 1. data
    train_examples = read_jsonl(job.dataset_dir / "train.jsonl", TrainExample)
    eval_examples = read_jsonl(job.dataset_dir / "eval.jsonl", TrainExample)
    eval_problems = read_jsonl(job.dataset_dir / "eval_problems.jsonl", Problem)
    if len(train_examples) < config.data.min_examples:
        raise TooFewExamples(
            f"dataset has {len(train_examples)} training examples, fewer than data.min_examples="
            f"{config.data.min_examples}: add sources or lower min_examples"
        )

    # 2. model + LoRA (seeded first: the LoRA init is random, and a rerun must be the same run)
    set_seed(t.seed)
    tokenizer, model = load_base(config)
    model = get_peft_model(model, lora_config(config))
    rows, stats = supervision_stats(tokenizer, [to_messages(e) for e in train_examples], t.max_seq_length)
    if stats["examples"] < config.data.min_examples or not rows:
        raise TooFewExamples(
            f"{stats['dropped_too_long']} of {len(train_examples)} examples have no assistant tokens within "
            f"max_seq_length={t.max_seq_length}; {stats['examples']} left, min_examples={config.data.min_examples}"
        )
    eval_rows = [to_messages(e) for e in eval_examples]
    has_eval = bool(eval_rows)

    # 3. trainer, callbacks (pass@1 before early stopping: it reads the metric we add)
    job.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    args = sft_config(config, job.checkpoint_dir, has_eval)
    # Rank 0 alone reports progress and hands checkpoints on.
    callbacks = [ProgressCallback(job.on_progress if rank == 0 else None),
                 CheckpointCallback(config_sha, t.batch_size * t.gradient_accumulation_steps * world_size,
                                    job.on_checkpoint if rank == 0 else None)]
    subset: list[Problem] = []
    if has_eval and v.metric == "pass_at_1":
        subset = random.Random(t.seed).sample(eval_problems, min(v.pass_at_1_problems, len(eval_problems)))
        callbacks.insert(0, PassAtOneCallback(tokenizer, subset, v.max_new_tokens, judge=job.judge,
                                                batch_size=v.pass_at_1_batch_size))
    if has_eval and v.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=v.early_stopping_patience))
    train_data, eval_data, collator = datasets_for(config, tokenizer, rows, eval_rows)
    trainer = SFTTrainer(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=train_data,
        eval_dataset=eval_data,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # ProgressCallback logs instead of printing dicts
    for cb in callbacks:
        if isinstance(cb, PassAtOneCallback):
            cb.model = trainer.model

    # 4. train, resuming from the last checkpoint of this job (the app put the durable one here),
    # never from one made under another config
    last, refused = check_local(job.checkpoint_dir, config_sha) if t.resume else (None, None)
    refused = job.resume_refused or refused
    resumed_from = int(Path(last).name.split("-")[-1]) if last else None
    if last:
        log.info("resuming from %s", last)
    elif refused:
        log.warning("%s", refused)
    started = time.monotonic()
    try:
        result = trainer.train(resume_from_checkpoint=last)
    except torch.cuda.OutOfMemoryError as exc:
        raise OutOfMemory(
            f"out of GPU memory at batch_size={t.batch_size}, max_seq_length={t.max_seq_length}: lower "
            "training.batch_size (raise gradient_accumulation_steps to keep the effective batch) or "
            "max_seq_length, or enable gradient_checkpointing"
        ) from exc

    # 5. ship the best (load_best_model_at_end) adapter: rank 0 alone writes it
    if not trainer.is_world_process_zero():
        return TrainResult(output_dir=job.output_dir, metrics={}, resumed_from_step=resumed_from, rank=0,
                           lora_alpha=0.0)
    tmp = job.output_dir.with_name(job.output_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.save_pretrained(str(tmp))
    adapter_cfg = json.loads((tmp / "adapter_config.json").read_text())
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    best_checkpoint = Path(trainer.state.best_model_checkpoint).name if trainer.state.best_model_checkpoint else None
    best_step = int(best_checkpoint.split("-")[-1]) if best_checkpoint else None
    shipped = next((h for h in evals if h.get("step") == best_step), evals[-1] if evals else {})
    metrics = {
        "train_loss": result.training_loss,
        "global_step": trainer.state.global_step,
        "max_steps": trainer.state.max_steps,
        "best_metric": trainer.state.best_metric,
        "best_checkpoint": best_checkpoint,
        "metric": v.metric if has_eval else None,
        # the evaluation of the checkpoint that ships
        "eval_loss": shipped.get("eval_loss"),
        "eval_pass_at_1": shipped.get("eval_pass_at_1"),
        "stopped_early": trainer.state.global_step < trainer.state.max_steps,
        "train_seconds": round(time.monotonic() - started, 2),
        "resumed_from_step": resumed_from,
        "resume_refused": refused,
        "world_size": world_size,
        "global_batch_size": t.batch_size * t.gradient_accumulation_steps * world_size,
        "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        # The checkpoint was chosen on these: an evaluation that includes them is optimistic.
        "early_stopping_problem_ids": [p.id for p in subset],
        **stats,
        "eval_history": [{k: h[k] for k in ("step", "eval_loss", "eval_pass_at_1") if k in h} for h in evals],
    }
    metrics = {k: (None if isinstance(v_, float) and math.isnan(v_) else v_) for k, v_ in metrics.items()}
    (tmp / "training_summary.json").write_text(json.dumps(
        {"adapter_name": config.adapter_name, "base_model": config.base_model, "config_sha256": config.sha256(),
         "metrics": metrics}, indent=2, default=str))
    shutil.rmtree(job.output_dir, ignore_errors=True)
    tmp.rename(job.output_dir)
    targets = adapter_cfg.get("target_modules") or []
    return TrainResult(
        output_dir=job.output_dir,
        metrics=metrics,
        resumed_from_step=resumed_from,
        rank=int(adapter_cfg["r"]),
        lora_alpha=float(adapter_cfg["lora_alpha"]),
        target_modules=sorted(targets) if isinstance(targets, list) else [targets],
    )
