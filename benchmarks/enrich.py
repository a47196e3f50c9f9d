"""Enrichment throughput against a local chat-completions server with 100 ms latency per request.

2,000 examples at concurrency 32: the bound is 32 / 0.1 s = 320 requests/s; the
goal is >= 90% of it. Then the same run again, served from the cache: the goal
is >= 20x faster. The server is the test suite's fake endpoint, in its own
process (so it doesn't share the client's event loop; two processes on one
port by default so the fake endpoint isn't what's measured). A bare aiohttp
loop against the same server in the same run shows the ceiling of this machine
at this moment.

    .venv/bin/python benchmarks/enrich.py [--examples 2000] [--concurrency 32] [--latency 0.1]

Figures are ratios against the bound / the first run, measured in this run; on
a shared 2-core machine absolute times are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from lorafleet.services.enrich.cache import AnswerCache
from lorafleet.services.enrich.dataset import enrich_dataset
from lorafleet.services.enrich.pipeline import Target
from lorafleet.shared.config import EnrichSection
from lorafleet.shared.nats_server import free_port
from lorafleet.shared.problems import TrainExample

SERVER = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "enrich" / "fake_chat_server.py"


def start_servers(latency: float, procs: int) -> tuple[list[subprocess.Popen], str]:
    """`procs` server processes on one port (SO_REUSEPORT), so the endpoint isn't the bottleneck."""
    port = free_port()
    started = []
    for _ in range(procs):
        cmd = [sys.executable, str(SERVER), "--latency", str(latency), "--port", str(port), "--reuse-port"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        started.append(proc)
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("PORT "):
            stop_servers(started)
            raise SystemExit(f"fake server did not start: {line!r}")
    return started, f"http://127.0.0.1:{port}/v1"


def stop_servers(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait()


async def raw_baseline(url: str, n: int, concurrency: int) -> float:
    """Requests/s of a bare aiohttp loop (no retries, cache, checks) against the same server: the ceiling here."""
    payload = {"model": "reasoner", "messages": [{"role": "user", "content": "x" * 1000}]}
    left = [n]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker() -> None:
            while left[0] > 0:
                left[0] -= 1
                async with session.post(url + "/chat/completions", json=payload) as resp:
                    await resp.read()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - started)


def write_dataset(root: Path, n: int) -> Path:
    root.mkdir(parents=True)
    with (root / "train.jsonl").open("w") as f:
        for i in range(n):
            ex = TrainExample(
                id=f"b{i}", problem_id=f"p{i}", source="bench",
                statement=f"Problem {i}: read an integer n and print n * {i} + {i % 7}.",
                code=f"n = int(input())\nprint(n * {i} + {i % 7})\n",
            )
            f.write(ex.model_dump_json() + "\n")
    return root


async def timed_run(src: Path, out: Path, cfg: EnrichSection, target: Target, data_dir: Path) -> tuple[float, dict]:
    with AnswerCache.in_data_dir(data_dir) as cache:
        started = time.perf_counter()
        stats = await enrich_dataset(src, out, cfg, target, cache)
        return time.perf_counter() - started, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--server-procs", type=int, default=2)
    args = parser.parse_args()

    servers, url = start_servers(args.latency, args.server_procs)
    try:
        raw_rate = asyncio.run(raw_baseline(url, args.examples, args.concurrency))
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            src = write_dataset(tmp_path / "ds", args.examples)
            cfg = EnrichSection(concurrency=args.concurrency, timeout_s=30)
            target = Target(url, "reasoner", None)
            cold_s, cold = asyncio.run(timed_run(src, tmp_path / "out1", cfg, target, tmp_path / "data"))
            warm_s, warm = asyncio.run(timed_run(src, tmp_path / "out2", cfg, target, tmp_path / "data"))
    finally:
        stop_servers(servers)

    bound = args.concurrency / args.latency
    rate = cold["requests"] / cold_s
    speedup = cold_s / warm_s
    ok_rate = rate >= 0.9 * bound and cold["generated"] == args.examples
    ok_cache = speedup >= 20 and warm["cached"] == args.examples and warm["requests"] == 0
    print(f"enrich benchmark: {args.examples} examples, latency {args.latency * 1000:.0f} ms, concurrency {args.concurrency}")
    print(f"| run | wall s | requests | req/s | vs bound {bound:.0f} req/s | vs bare aiohttp loop | vs first run |")
    print("|---|---|---|---|---|---|---|")
    print(f"| bare aiohttp loop (baseline) | - | {args.examples} | {raw_rate:.1f} | {raw_rate / bound:.1%} | 1.00 | - |")
    print(f"| enrich, first run (endpoint) | {cold_s:.2f} | {cold['requests']} | {rate:.1f} | {rate / bound:.1%} | {rate / raw_rate:.2f} | 1x |")
    print(f"| enrich, second run (cache) | {warm_s:.3f} | {warm['requests']} | - | - | - | {speedup:.0f}x faster |")
    print(f"goal >= 90% of bound: {'met' if ok_rate else 'NOT met'}; goal cache >= 20x: {'met' if ok_cache else 'NOT met'}")
    if not (ok_rate and ok_cache):
        sys.exit(1)


if __name__ == "__main__":
    main()
