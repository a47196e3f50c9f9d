"""Trainer throughput: packing strategies on CPU (tiny model), and the GPU QLoRA path.

CPU (always): supervised (non-padding, assistant) tokens per second of the same
data with packing none (padded batches, the baseline), wrapped, bfd (TRL's
padding-free) and bfd_rows (services/trainer/packing.py), plus the
fraction of batch tokens that are padding. Figures are ratios against the padded
baseline measured in the same run, per CPU-second of this process (robust to other
jobs on a shared machine) and per wall-clock second.

GPU (only when CUDA is available): r=32 QLoRA (NF4, bf16 compute, gradient
checkpointing, paged AdamW 8-bit) at 4096 tokens on a random-initialised model with
the shape of Qwen2.5-0.5B built locally: tokens/s and peak VRAM, next to a plain
transformers `Trainer` on the same model, LoRA and settings (no packing).

Data parallel (CPU): tokens/s of one job on 1 and 2 torchrun processes (scaling efficiency).
Durable checkpoints: upload to / fetch from the JetStream object store and the time to resume
on an empty disk, for the tiny LoRA and an r=32 LoRA on a ~100M-parameter model.

    .venv/bin/python benchmarks/train.py [--steps 30] [--repeats 2] [--gpu-steps 20] [--scaling-steps 20]
                                         [--only packing|scaling|checkpoints|gpu ...]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

from lorafleet.shared import synthetic
from lorafleet.shared.problems import TrainExample

MAX_LENGTH = 512
BATCH = 8
REASONING_WORDS = "we read the input then compute the answer with one pass and print it carefully".split()


def examples(n: int, seed: int = 0) -> list[TrainExample]:
    """LoRA-family examples with reasoning traces of log-normal length (median ~30 words, a long
    tail to 400): real traces and solutions vary that much, which is where padding costs."""
    rng = random.Random(seed)
    problems = synthetic.lora_problems(None, "train")
    out = []
    for i in range(n):
        p = problems[i % len(problems)]
        words = min(int(rng.lognormvariate(3.4, 1.0)), 400)
        reasoning = " ".join(rng.choice(REASONING_WORDS) for _ in range(words)) + "." if words else None
        out.append(synthetic.to_train_example(p).model_copy(update={"id": f"{p.id}#{i}", "reasoning": reasoning}))
    return out


def cpu_run(model_dir: Path, strategy: str, steps: int, rows: list[dict], work: Path) -> dict:
    from peft import get_peft_model
    from trl import SFTTrainer

    from transformers import set_seed

    from lorafleet.services.trainer.train import datasets_for, load_base, lora_config, sft_config
    from lorafleet.shared.config import parse_config

    config = parse_config({
        "adapter_name": "bench", "base_model": str(model_dir), "quantization": "none",
        "lora": {"r": 16, "lora_alpha": 32, "target_modules": "all-linear", "lora_dropout": 0.0},
        "training": {"max_steps": steps, "batch_size": BATCH, "gradient_accumulation_steps": 1, "max_seq_length": MAX_LENGTH,
                     "packing": strategy != "none", "packing_strategy": "bfd" if strategy == "none" else strategy,
                     "gradient_checkpointing": False, "optim": "adamw_torch", "bf16": False,
                     "save_steps": 10_000, "logging_steps": 10_000, "learning_rate": 1e-3},
    })
    set_seed(0)
    tokenizer, model = load_base(config)
    model = get_peft_model(model, lora_config(config))
    args = sft_config(config, work / strategy, has_eval=False)
    args.save_strategy = "no"
    train_data, _, collator = datasets_for(config, tokenizer, rows, [])
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_data, processing_class=tokenizer,
                         data_collator=collator)
    supervised = total = padding = 0
    for i, batch in enumerate(trainer.get_train_dataloader()):
        if i == steps:
            break
        labels = batch["labels"]
        supervised += int((labels != -100).sum())
        total += labels.numel()
        if "attention_mask" in batch and batch["attention_mask"] is not None:
            padding += int((batch["attention_mask"] == 0).sum())
        else:  # packed rows: padded only at their ends
            padding += int((batch["input_ids"] == tokenizer.pad_token_id).sum())
    started, cpu_started = time.perf_counter(), time.process_time()
    trainer.train()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return {"strategy": strategy, "seconds": seconds, "cpu_seconds": cpu_seconds, "supervised_tokens": supervised,
            "supervised_per_s": supervised / seconds, "supervised_per_cpu_s": supervised / cpu_seconds,
            "padding_fraction": padding / total if total else 0.0}


def cpu_benchmark(steps: int, repeats: int) -> None:
    from lorafleet.services.trainer.tiny_model import configure_cpu_threads, make_tiny
    from lorafleet.services.trainer.train import to_messages

    threads = configure_cpu_threads()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = make_tiny(work / "tiny", pretrain=False, cache_dir=work / "cache")
        rows = [to_messages(e) for e in examples(2000)]
        strategies = ("none", "wrapped", "bfd", "bfd_rows")
        # Interleaved repeats, best of each: the machine's load drifts during the run.
        runs = [cpu_run(model_dir, s, steps, rows, work) for _ in range(repeats) for s in strategies]
        results = [max((r for r in runs if r["strategy"] == s), key=lambda r: r["supervised_per_cpu_s"])
                   for s in strategies]
    base, base_cpu = results[0]["supervised_per_s"], results[0]["supervised_per_cpu_s"]
    print(f"CPU, tiny model (random init), batch {BATCH} x max_length {MAX_LENGTH}, {steps} steps, "
          f"best of {repeats}, torch threads {threads}")
    print("per CPU-second (this process's CPU time: robust to other load on the machine) and per wall second")
    print(f"{'packing':<10}{'tok/CPU-s':>11}{'vs none':>9}{'tok/s wall':>12}{'vs none':>9}{'padding':>9}")
    for r in results:
        print(f"{r['strategy']:<10}{r['supervised_per_cpu_s']:>11.0f}{r['supervised_per_cpu_s'] / base_cpu:>8.2f}x"
              f"{r['supervised_per_s']:>12.0f}{r['supervised_per_s'] / base:>8.2f}x{r['padding_fraction']:>9.1%}")
    print("note: wrapped lets examples attend to each other (and splits them across rows); bfd and bfd_rows do not.")


def gpu_benchmark(steps: int) -> None:
    import torch

    if not torch.cuda.is_available():
        print("GPU: no CUDA device here; the QLoRA benchmark did not run.")
        return
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (AutoModelForCausalLM, BitsAndBytesConfig, Qwen2Config, Qwen2ForCausalLM, Trainer,
                              TrainingArguments, set_seed)
    from trl import SFTTrainer

    from lorafleet.services.trainer.tiny_model import make_tiny
    from lorafleet.services.trainer.train import sft_config
    from lorafleet.shared.config import parse_config

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tok_dir = make_tiny(work / "tok", pretrain=False, cache_dir=work / "cache")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        shape = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                            num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                            tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
        set_seed(0)
        Qwen2ForCausalLM(shape).to(torch.bfloat16).save_pretrained(work / "qwen05b-shape")
        tokenizer.save_pretrained(work / "qwen05b-shape")
        rng = random.Random(0)
        # 4096-token examples of random ids (the tokenizer only frames them): throughput, not learning.
        ids = [[rng.randrange(1000, 150000) for _ in range(4096)] for _ in range(steps * 2 + 4)]
        lora = LoraConfig(r=32, lora_alpha=64, lora_dropout=0.05, task_type="CAUSAL_LM",
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                 bnb_4bit_compute_dtype=torch.bfloat16)

        def measure(name: str, build) -> None:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            trainer = build()
            started = time.perf_counter()
            trainer.train()
            torch.cuda.synchronize()
            seconds = time.perf_counter() - started
            print(f"{name:<34}{steps * 4096 / seconds:>12.0f} tok/s{torch.cuda.max_memory_allocated() / 2**30:>9.2f} GiB")

        def lorafleet_trainer():
            config = parse_config({"adapter_name": "bench", "base_model": str(work / "qwen05b-shape"),
                                   "quantization": "nf4", "lora": {"r": 32, "lora_alpha": 64},
                                   "training": {"max_steps": steps, "batch_size": 1, "gradient_accumulation_steps": 1,
                                                "max_seq_length": 4096, "packing": False, "save_steps": 10_000}})
            from lorafleet.services.trainer.train import load_base, lora_config

            _, model = load_base(config)
            model = get_peft_model(model, lora_config(config))
            args = sft_config(config, work / "ckpt-a", has_eval=False)
            args.save_strategy = "no"
            args.assistant_only_loss = False
            data = Dataset.from_dict({"input_ids": ids})
            return SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)

        def plain_trainer():
            model = AutoModelForCausalLM.from_pretrained(work / "qwen05b-shape", quantization_config=bnb,
                                                         dtype=torch.bfloat16)
            model = get_peft_model(prepare_model_for_kbit_training(model, use_gradient_checkpointing=True), lora)
            args = TrainingArguments(output_dir=str(work / "ckpt-b"), max_steps=steps, per_device_train_batch_size=1,
                                     learning_rate=2e-4, bf16=True, gradient_checkpointing=True,
                                     optim="paged_adamw_8bit", save_strategy="no", report_to=[], logging_steps=10_000)
            data = Dataset.from_dict({"input_ids": ids, "labels": ids})
            return Trainer(model=model, args=args, train_dataset=data)

        print(f"GPU {torch.cuda.get_device_name()}: r=32 QLoRA NF4, 4096 tokens, batch 1, {steps} steps")
        measure("lorafleet (SFTTrainer, our config)", lorafleet_trainer)
        measure("plain transformers Trainer", plain_trainer)


# ------------------------------------------------------------------ data parallel on CPU


def scaling_job(model_dir: Path, work: Path, processes: int, steps: int):
    from lorafleet.services.trainer.train import TrainJob
    from lorafleet.shared.config import parse_config

    data = work / "scaling-ds"
    if not data.exists():
        synthetic.write_dataset(data, "python")
        (data / "eval.jsonl").unlink()
    config = parse_config({
        "adapter_name": "bench", "base_model": str(model_dir), "quantization": "none",
        "lora": {"r": 16, "lora_alpha": 32, "target_modules": "all-linear", "lora_dropout": 0.0},
        "data": {"min_examples": 10},
        "training": {"max_steps": steps, "batch_size": 4, "gradient_accumulation_steps": 1, "max_seq_length": 256,
                     "packing": True, "packing_strategy": "bfd_rows", "gradient_checkpointing": False,
                     "optim": "adamw_torch", "bf16": False, "save_steps": 10_000, "logging_steps": 1,
                     "learning_rate": 1e-3, "processes": processes},
    })
    progress: list[dict] = []
    job = TrainJob(config, data, work / f"out-{processes}", work / f"ckpt-{processes}", on_progress=progress.append)
    return job, progress


def scaling_benchmark(steps: int) -> None:
    """Tokens/s of one job on 1 and on 2 processes (each with batch 4 and one torch thread: weak
    scaling, the global batch doubles). The rate is the trainer's own: non-padding tokens over
    all ranks since training began (model loading and process start excluded)."""
    import os

    from lorafleet.services.trainer.distributed import run_distributed
    from lorafleet.services.trainer.tiny_model import make_tiny
    from lorafleet.services.trainer.train import train

    os.environ["LORAFLEET_TORCH_THREADS"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = make_tiny(work / "tiny", pretrain=False)
        rates = {}
        for processes in (1, 2):
            job, progress = scaling_job(model_dir, work, processes, steps)
            started = time.perf_counter()
            run_distributed(job, processes) if processes > 1 else train(job)
            rates[processes] = (progress[-1]["tokens_per_second"], time.perf_counter() - started)
    (one, one_wall), (two, two_wall) = rates[1], rates[2]
    print(f"\nCPU data parallel (torchrun + DDP gloo), tiny model, batch 4 per process, {steps} steps, 1 thread each, "
          f"{os.cpu_count()} cores")
    print(f"{'processes':<10}{'tokens/s':>10}{'vs 1':>8}{'efficiency':>12}{'wall s (with start-up)':>24}")
    print(f"{1:<10}{one:>10.0f}{1.0:>7.2f}x{1.0:>12.0%}{one_wall:>24.1f}")
    print(f"{2:<10}{two:>10.0f}{two / one:>7.2f}x{two / (2 * one):>12.0%}{two_wall:>24.1f}")


# ------------------------------------------------------------------ durable checkpoints


def checkpoint_benchmark() -> None:
    """Upload (put into the JetStream object store of a local nats-server), fetch onto an empty
    disk, and resume (fetch + load + first step) for a checkpoint of the tiny LoRA and of an
    r=32 LoRA on a ~100M-parameter model (hidden 768, 12 layers: the gpu-check shape)."""
    import asyncio
    import dataclasses

    from lorafleet.services.trainer.checkpoints import DurableCheckpoints
    from lorafleet.services.trainer.tiny_model import Recipe, build_model, configure_cpu_threads, make_tiny, train_tokenizer
    from lorafleet.shared.artifacts import ObjectStoreArtifacts
    from lorafleet.shared.nats_server import NatsServer
    from lorafleet.shared.settings import Settings

    configure_cpu_threads()
    print("\nDurable checkpoints: JetStream object store on a local nats-server (file storage)")
    print(f"{'model':<22}{'LoRA params':>12}{'ckpt MB':>9}{'upload s 1st/2nd':>18}{'MB/s':>7}{'fetch s':>9}"
          f"{'resume s':>10}{'cold s':>8}{'resume/cold':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server = NatsServer(store_dir=work / "nats").start()
        try:
            settings = Settings(nats_url=server.url, data_dir=work / "data")
            big = work / "base-100m"
            recipe = dataclasses.replace(Recipe(), hidden_size=768, num_layers=12, num_heads=12, num_kv_heads=4,
                                         intermediate_size=3072, max_positions=1024)
            tokenizer = train_tokenizer(recipe)
            model = build_model(recipe, tokenizer)
            size = sum(p.numel() for p in model.parameters())
            model.save_pretrained(big)
            tokenizer.save_pretrained(big)
            del model
            cases = [("tiny (0.9M)", make_tiny(work / "tiny", pretrain=False), 16),
                     (f"~100M ({size / 1e6:.0f}M)", big, 32)]
            for name, model_dir, r in cases:
                row = asyncio.run(_checkpoint_case(model_dir, r, work / name.split()[0], settings,
                                                   ObjectStoreArtifacts, DurableCheckpoints))
                uploads = f"{row['upload'][0]:.2f}/{row['upload'][1]:.2f}"
                print(f"{name:<22}{row['lora_params']:>12,}{row['mb']:>9.1f}{uploads:>18}"
                      f"{row['mb'] / row['upload'][1]:>7.0f}{row['fetch']:>9.2f}{row['resume']:>10.2f}{row['cold']:>8.2f}"
                      f"{row['resume'] / row['cold']:>11.2f}x")
        finally:
            server.stop()
    print("1st upload of a job also opens the store's bucket; MB/s from the 2nd. "
          "resume s = fetch onto an empty disk + load + optimizer/scheduler/RNG state + the next step; "
          "cold s = the same job from scratch, load + first step (the baseline)")


async def _checkpoint_case(model_dir: Path, r: int, work: Path, settings, store_cls, durable_cls) -> dict:
    from lorafleet.services.trainer.train import TrainJob, train
    from lorafleet.shared.config import parse_config

    data = work / "ds"
    synthetic.write_dataset(data, "python", train_limit=64)
    (data / "eval.jsonl").unlink()
    config = parse_config({
        "adapter_name": "bench", "base_model": str(model_dir), "quantization": "none",
        "lora": {"r": r, "lora_alpha": 2 * r, "target_modules": "all-linear", "lora_dropout": 0.0},
        "data": {"min_examples": 10},
        "training": {"max_steps": 2, "batch_size": 1, "max_seq_length": 128, "gradient_accumulation_steps": 1,
                     "gradient_checkpointing": False, "optim": "adamw_torch", "bf16": False, "save_steps": 1,
                     "save_total_limit": 2, "logging_steps": 1},
    })
    store = store_cls(settings)
    durable = durable_cls(store, f"checkpoints/bench/{work.name}", keep=2)
    loop = asyncio.get_running_loop()
    uploads: list[float] = []

    def upload(path: Path) -> None:  # the trainer thread waits for it, as in the service
        started = time.perf_counter()
        asyncio.run_coroutine_threadsafe(durable.save(path), loop).result()
        uploads.append(time.perf_counter() - started)

    result = await asyncio.to_thread(train, TrainJob(config, data, work / "out", work / "ckpt-a", on_checkpoint=upload))
    manifest = await durable.manifest()
    first = min(manifest.checkpoints, key=lambda e: e.step)
    # baseline: the same job from scratch on an empty disk, one step (load + first step)
    one_step = config.model_copy(update={"training": config.training.model_copy(update={"max_steps": 1})})
    started = time.perf_counter()
    await asyncio.to_thread(train, TrainJob(one_step, data, work / "out-cold", work / "ckpt-cold"))
    cold = time.perf_counter() - started
    # resume from checkpoint-1 on an empty disk (the newer one taken out of the manifest)
    await durable._write_manifest(manifest.model_copy(update={"checkpoints": [first]}))
    started = time.perf_counter()
    step, _ = await durable.restore(work / "ckpt-b", config.sha256())
    fetched = time.perf_counter() - started
    resumed = await asyncio.to_thread(train, TrainJob(config, data, work / "out-b", work / "ckpt-b"))
    resume = time.perf_counter() - started
    assert step == 1 and resumed.resumed_from_step == 1
    await durable.clear()
    await store.close()
    return {"lora_params": result.metrics["trainable_parameters"], "mb": first.size_bytes / 1e6, "upload": uploads[:2],
            "fetch": fetched, "resume": resume, "cold": cold}


def main() -> None:
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.set_verbosity_error()
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--gpu-steps", type=int, default=20)
    parser.add_argument("--scaling-steps", type=int, default=20)
    parser.add_argument("--only", choices=["packing", "scaling", "checkpoints", "gpu"], action="append",
                        help="run only these parts (repeatable); default all")
    args = parser.parse_args()
    parts = args.only or ["packing", "scaling", "checkpoints", "gpu"]
    if "packing" in parts:
        cpu_benchmark(args.steps, args.repeats)
    if "scaling" in parts:
        scaling_benchmark(args.scaling_steps)
    if "checkpoints" in parts:
        checkpoint_benchmark()
    if "gpu" in parts:
        gpu_benchmark(args.gpu_steps)


if __name__ == "__main__":
    main()
