"""Evaluation with vLLM vs the transformers backend: same tiny model, adapter, problems, seeds.

    .venv/bin/python benchmarks/vllm_eval.py [--problems 24] [--n 8] [--max-new-tokens 96] [--pretrained] [--no-server]

Needs `make setup-vllm`. In one run, on the same machine:

1. baseline: the transformers backend (`backend: transformers`, batch 8);
2. vLLM's offline engine (`backend: vllm`, the child process in .venv-vllm);
3. a vLLM server (`lorafleet model serve --engine vllm`) through `backend: openai`.

Each runs the evaluator's full loop (base and adapter, n samples + one greedy per
problem, judged by the sandbox) and reports generated tokens/s (output tokens
over the time spent inside the backend's generate), problems/min (problems x
variants over the whole loop's wall time), the engine's start time, and the
ratio to the baseline. Then, on the offline engine: base through the zero
adapter vs the raw base vs the adapter, same requests (the cost of the
mixed-batch workaround and of LoRA). The machine may be shared: ratios within a
run mean more than absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from lorafleet.services.evaluator.evaluate import build_request, run_evaluation
from lorafleet.services.evaluator.judging import make_judge
from lorafleet.services.evaluator.models import SamplingParams
from lorafleet.shared import synthetic


class Timed:
    """Wraps a backend: time spent in generate() and output tokens produced."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name
        self.seconds, self.tokens = 0.0, 0

    async def generate(self, requests, variant, params):
        t0 = time.perf_counter()
        out = await self.inner.generate(requests, variant, params)
        self.seconds += time.perf_counter() - t0
        self.tokens += sum(sum(g.output_tokens) for g in out)
        return out

    async def aclose(self):
        await self.inner.aclose()


def make_pair(root: Path, pretrained: bool) -> tuple[Path, Path]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lorafleet.services.trainer.tiny_model import make_tiny

    base = make_tiny(root / "base", pretrain=pretrained)
    model = AutoModelForCausalLM.from_pretrained(base)
    # the shape of the project's tiny LoRA (r=16, all linear layers), random B so it changes outputs
    lora = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, init_lora_weights=False, task_type="CAUSAL_LM",
                                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                            "up_proj", "down_proj"]))
    lora.save_pretrained(root / "adapters" / "tiny-lora")
    return base, root / "adapters" / "tiny-lora"


async def run_one(label: str, backend, problems, params, start_s: float) -> dict:
    timed = Timed(backend)
    t0 = time.perf_counter()
    result = await run_evaluation(problems, timed, params, make_judge(), greedy=True, chunk_size=8)
    wall = time.perf_counter() - t0
    await timed.aclose()
    greedy = {(r.problem_id, r.variant): r.greedy_passed for r in result.problems}
    row = {"label": label, "start_s": start_s, "wall_s": wall, "gen_s": timed.seconds, "tokens": timed.tokens,
           "tok_s": timed.tokens / timed.seconds, "problems_min": 2 * len(problems) / (wall / 60),
           "greedy_pass": {v: sum(bool(g) for (p, vv), g in greedy.items() if vv == v) / len(problems) for v in ("base", "adapter")},
           "pass@1": {v: sum(r.correct / r.n for r in result.problems if r.variant == v) / len(problems) for v in ("base", "adapter")}}
    print(f"  {label}: start {start_s:.1f} s, loop {wall:.1f} s, generate {timed.seconds:.1f} s, "
          f"{timed.tokens} tokens -> {row['tok_s']:.0f} tok/s, {row['problems_min']:.1f} problems/min, "
          f"greedy pass@1 base/adapter {row['greedy_pass']['base']:.3f}/{row['greedy_pass']['adapter']:.3f}", flush=True)
    return row


async def lora_costs(backend, problems, params) -> None:
    """Offline engine, same requests: base through the zero adapter vs raw base vs adapter."""
    reqs = [build_request(p, params.seed) for p in problems]
    figures = {}
    for label, lora in (("raw base", backend.RAW_BASE), ("base (zero adapter)", None), ("adapter", backend.adapter_name)):
        await backend.generate_mixed([(r, lora) for r in reqs[:2]], params)  # warm
        t0 = time.perf_counter()
        out = await backend.generate_mixed([(r, lora) for r in reqs], params)
        dt = time.perf_counter() - t0
        figures[label] = sum(sum(g.output_tokens) for g in out) / dt
    raw = figures["raw base"]
    print("  offline engine, same requests (tokens/s, ratio to the raw base):")
    for label, v in figures.items():
        print(f"    {label:22s} {v:8.0f}  {v / raw:5.2f}x")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=24)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--pretrained", action="store_true", help="the pretrained tiny base (built once, minutes)")
    ap.add_argument("--no-server", action="store_true", help="skip the vLLM server leg")
    args = ap.parse_args()

    from lorafleet.services.evaluator.backends.openai import OpenAIBackend
    from lorafleet.services.evaluator.backends.transformers import TransformersBackend
    from lorafleet.services.evaluator.backends.vllm import VLLMBackend
    from lorafleet.shared.vllm_server import VLLMServer, VLLMServerConfig

    problems = synthetic.lora_problems("python", "heldout")[:args.problems]
    params = SamplingParams(n=args.n, temperature=0.8, top_p=0.95, max_new_tokens=args.max_new_tokens, seed=0)
    print(f"{len(problems)} problems x (base, adapter) x ({args.n} sampled + 1 greedy), max_new_tokens "
          f"{args.max_new_tokens}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        base, adapter = make_pair(Path(tmp), args.pretrained)
        rows = []
        t0 = time.perf_counter()
        hf = TransformersBackend(base, adapter, batch_size=8)
        rows.append(await run_one("transformers (baseline)", hf, problems, params, time.perf_counter() - t0))

        t0 = time.perf_counter()
        offline = VLLMBackend(str(base), adapter, adapter_name="tiny-lora")
        start = time.perf_counter() - t0
        try:
            await lora_costs(offline, problems, params)
        except BaseException:
            await offline.aclose()
            raise
        rows.append(await run_one("vllm offline", offline, problems, params, start))

        if not args.no_server:
            t0 = time.perf_counter()
            with VLLMServer(VLLMServerConfig(model=str(base), port=0, name="tiny", adapter_dir=adapter.parent)) as server:
                start = time.perf_counter() - t0
                client = OpenAIBackend(server.url, "tiny", "tiny-lora", concurrency=16)
                await client.load_adapter("tiny-lora", str(adapter))
                rows.append(await run_one("vllm server (openai)", client, problems, params, start))

    baseline = rows[0]
    print("\nbackend                   start s  tok/s  x base  problems/min  x base  greedy pass@1 base/adapter")
    for r in rows:
        print(f"{r['label']:25s} {r['start_s']:7.1f} {r['tok_s']:6.0f} {r['tok_s'] / baseline['tok_s']:6.2f}x "
              f"{r['problems_min']:12.1f} {r['problems_min'] / baseline['problems_min']:6.2f}x   "
              f"{r['greedy_pass']['base']:.3f}/{r['greedy_pass']['adapter']:.3f}")


if __name__ == "__main__":  # vLLM's engine spawns processes: the guard is required
    sys.exit(asyncio.run(main()))
