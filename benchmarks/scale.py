"""Evaluator throughput with 1, 2, 3 replicas (separate `lorafleet serve evaluator` processes).

One evaluation of P held-out synthetic problems, sharded one problem per work item,
n samples per problem and variant (base and adapter) on the tiny random model; every
sample is judged in the sandbox. Time = from publishing adapter.trained until
adapter.evaluated, with all replicas already pulling (start-up is not counted).
Throughput is printed as a ratio against 1 replica measured in the same run, so a
busy machine shifts all rows alike. On 2 cores expect it to flatten at 2 replicas.

    .venv/bin/python benchmarks/scale.py [--problems 12] [--n 8] [--replicas 1 2 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats
from nats.js.errors import NotFoundError

from lorafleet.shared import synthetic
from lorafleet.shared.artifacts import open_store
from lorafleet.shared.bus import ensure_stream, publish_event
from lorafleet.shared.config import parse_config
from lorafleet.shared.events import STREAM, AdapterTrained
from lorafleet.shared.nats_server import NatsServer
from lorafleet.shared.processes import stop_groups
from lorafleet.shared.settings import Settings


def tiny_pair(root: Path) -> tuple[Path, Path]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lorafleet.services.trainer.tiny_model import make_tiny

    base = make_tiny(root / "base")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM"))
    model.save_pretrained(root / "adapter")
    return base, root / "adapter"


def spawn(url: str, data_dir: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "LORAFLEET_NATS_URL": url, "LORAFLEET_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as fh:
        return subprocess.Popen([sys.executable, "-c", "from lorafleet.cli import main; main()", "serve", "evaluator"],
                                env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def stop(procs: list[subprocess.Popen]) -> None:
    stop_groups(procs, timeout=20)


async def one_run(replicas: int, root: Path, base: Path, adapter: Path, problems_path: Path, n_problems: int,
                  n: int) -> float:
    work = root / f"r{replicas}"
    server = NatsServer(store_dir=work / "nats").start()
    procs: list[subprocess.Popen] = []
    try:
        settings = Settings(nats_url=server.url, data_dir=work / "data")
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await ensure_stream(js, settings)
        procs = [spawn(server.url, work / "data", work / f"evaluator-{i}.log") for i in range(replicas)]
        deadline = time.monotonic() + 180
        while True:
            try:
                if (await js.consumer_info(STREAM, "evaluator")).num_waiting >= replicas:
                    break
            except NotFoundError:
                pass
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"evaluator replicas did not start: see {work}")
            await asyncio.sleep(0.2)
        store = open_store(settings, js=js)
        adapter_ref = await store.put_dir(adapter, "adapters/bench/v1.tar")
        problems_ref = await store.put_file(problems_path, "datasets/bench/eval_problems.jsonl")
        config = parse_config({"adapter_name": "bench", "base_model": str(base), "quantization": "none",
                               "evaluation": {"n": n, "k": [1], "max_new_tokens": 16, "shard_size": 1, "greedy": False}})
        done = asyncio.Event()

        async def on_evaluated(_msg) -> None:
            done.set()

        await nc.subscribe("lorafleet.v1.adapter.evaluated", cb=on_evaluated)
        t0 = time.perf_counter()
        await publish_event(js, AdapterTrained(
            request_id=f"bench-{replicas}", adapter_name="bench", version=1, adapter=adapter_ref, base_model=str(base),
            rank=4, target_modules=["q_proj", "v_proj"], config=config.model_dump(mode="json"),
            config_sha256=config.sha256(), dataset_sha256="d" * 64, eval_problems=problems_ref))
        await asyncio.wait_for(done.wait(), timeout=1800)
        elapsed = time.perf_counter() - t0
        await nc.close()
        return elapsed
    finally:
        stop(procs)
        server.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=12)
    parser.add_argument("--n", type=int, default=8, help="samples per problem and variant")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lorafleet-scale-") as tmp:
        root = Path(tmp)
        base, adapter = tiny_pair(root)
        problems = synthetic.lora_problems("python", "heldout")[: args.problems]
        path = root / "eval_problems.jsonl"
        path.write_text("".join(p.model_dump_json() + "\n" for p in problems))
        samples = len(problems) * args.n * 2
        print(f"evaluator scaling: {len(problems)} problems x {args.n} samples x 2 variants = {samples} judged "
              f"samples per run, 1 problem per shard, {os.cpu_count()} CPUs")
        results = {}
        for r in args.replicas:
            results[r] = await one_run(r, root, base, adapter, path, len(problems), args.n)
            print(f"  {r} replica(s): {results[r]:.1f} s", flush=True)
    first = results[args.replicas[0]]
    print(f"\n| replicas | wall s | samples/s | throughput vs {args.replicas[0]} replica |")
    print("|---|---|---|---|")
    for r, t in results.items():
        print(f"| {r} | {t:.1f} | {samples / t:.1f} | {first / t:.2f}x |")


if __name__ == "__main__":
    asyncio.run(main())
