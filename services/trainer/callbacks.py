"""Trainer callbacks: generation-based pass@1 at every evaluation, and progress reports."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from transformers import TrainerCallback

from lorafleet.shared.problems import Problem
from lorafleet.shared.prompts import extract_code, render_messages

log = logging.getLogger(__name__)


def greedy_pass_at_1(model, tokenizer, problems: list[Problem], max_new_tokens: int,
                     judge: Callable | None = None, batch_size: int = 16) -> tuple[float, list[str | None]]:
    """Greedy completion per problem, judged by the sandbox: the fraction that pass all tests."""
    import torch

    if judge is None:
        from lorafleet.shared.sandbox import judge_many as judge
    was_training = model.training
    model.eval()
    codes: list[str | None] = []
    try:
        for start in range(0, len(problems), batch_size):
            chunk = problems[start:start + batch_size]
            prompts = [
                tokenizer.apply_chat_template(render_messages(p.statement, p.starter_code),
                                              add_generation_prompt=True, tokenize=False)
                for p in chunk
            ]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left",
                            add_special_tokens=False).to(model.device)
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
            for row in out[:, enc["input_ids"].shape[1]:]:
                codes.append(extract_code(tokenizer.decode(row, skip_special_tokens=True)))
    finally:
        if was_training:
            model.train()
    todo = [(i, c) for i, c in enumerate(codes) if c is not None]
    verdicts = judge([(c, problems[i].tests) for i, c in todo]) if todo else []
    passed = sum(1 for j in verdicts if j.verdict == "passed")
    return (passed / len(problems) if problems else 0.0), codes


class PassAtOneCallback(TrainerCallback):
    """Adds `eval_pass_at_1` to the eval metrics (before EarlyStoppingCallback and the
    best-checkpoint choice read them: this callback must come first in the list)."""

    def __init__(self, tokenizer, problems: list[Problem], max_new_tokens: int, judge: Callable | None = None,
                 batch_size: int = 16):
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.problems = problems
        self.max_new_tokens = max_new_tokens
        self.judge = judge
        self.model = None  # set by train() once the trainer wraps it

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        if metrics is None or not self.problems:
            return
        started = time.monotonic()
        distributed = _distributed()
        score = None
        if state.is_world_process_zero:  # one process generates and judges; the others get its score
            score, _ = greedy_pass_at_1(self.model or model, self.tokenizer, self.problems, self.max_new_tokens,
                                        judge=self.judge, batch_size=self.batch_size)
        if distributed:
            import torch.distributed as dist

            box = [score]
            dist.broadcast_object_list(box, src=0)
            score = box[0]
        metrics["eval_pass_at_1"] = score
        if state.log_history and "eval_loss" in state.log_history[-1]:
            state.log_history[-1]["eval_pass_at_1"] = score
        log.info("step %d: pass@1 %.3f on %d problems (%.1fs)", state.global_step, score, len(self.problems),
                 time.monotonic() - started)


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class CheckpointCallback(TrainerCallback):
    """After every save: record the config hash and data position in the checkpoint
    (lorafleet_checkpoint.json), then hand it to `sink` (the durable upload) on rank 0.
    The upload finishes before training goes on, so a kill after this step resumes here."""

    def __init__(self, config_sha256: str, samples_per_step: int, sink: Callable[[Path], None] | None):
        self.config_sha256 = config_sha256
        self.samples_per_step = samples_per_step
        self.sink = sink

    def on_save(self, args, state, control, **kwargs):
        from lorafleet.services.trainer.checkpoints import META, checkpoint_meta

        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if _distributed():
            import torch.distributed as dist

            dist.barrier()  # every rank's rng_state_<rank>.pth is on disk before the upload starts
        if not state.is_world_process_zero:
            return
        meta = checkpoint_meta(self.config_sha256, state, args.world_size, self.samples_per_step)
        tmp = path / f".{META}.tmp"
        tmp.write_text(json.dumps(meta, indent=2))
        tmp.replace(path / META)
        if self.sink is not None:
            self.sink(path)


class ProgressCallback(TrainerCallback):
    """Calls `emit(dict)` at every log step and evaluation: step, total, loss, lr, tokens/s, eta."""

    def __init__(self, emit: Callable[[dict[str, Any]], None] | None):
        self.emit = emit
        self.started: float | None = None
        self.start_step = 0
        self.start_tokens = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()
        self.start_step = state.global_step
        self.start_tokens = state.num_input_tokens_seen

    def _report(self, state, **fields: Any) -> None:
        shown = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in fields.items() if v is not None}
        log.info("step %d/%d %s", state.global_step, state.max_steps, " ".join(f"{k}={v}" for k, v in shown.items()))
        if self.emit is None or self.started is None:
            return
        elapsed = max(time.monotonic() - self.started, 1e-9)
        done = state.global_step - self.start_step
        eta = elapsed / done * (state.max_steps - state.global_step) if done > 0 else None
        tokens = state.num_input_tokens_seen - self.start_tokens
        self.emit({"step": state.global_step, "total_steps": state.max_steps,
                   "tokens_per_second": tokens / elapsed if tokens else None, "eta_seconds": eta, **fields})

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self._report(state, loss=float(logs["loss"]), learning_rate=float(logs.get("learning_rate", 0.0)))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        metrics = metrics or {}
        self._report(state, eval_loss=metrics.get("eval_loss"), eval_pass_at_1=metrics.get("eval_pass_at_1"))
