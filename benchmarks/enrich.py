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
import os
import statistics
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
    parser.add_argument("--repeat", type=int, default=3, help="rounds (baseline, first run, cached run); goals judged on the median")
    args = parser.parse_args()

    bound = args.concurrency / args.latency
    rounds = []
    servers, url = start_servers(args.latency, args.server_procs)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            src = write_dataset(tmp_path / "ds", args.examples)
            cfg = EnrichSection(concurrency=args.concurrency, timeout_s=30)
            target = Target(url, "reasoner", None)
            for r in range(args.repeat):
                cpu = time.process_time()
                raw_rate = asyncio.run(raw_baseline(url, args.examples, args.concurrency))
                raw_cpu = time.process_time() - cpu
                data = tmp_path / f"data{r}"  # a fresh cache each round
                cpu = time.process_time()
                cold_s, cold = asyncio.run(timed_run(src, tmp_path / f"out{r}a", cfg, target, data))
                cold_cpu = time.process_time() - cpu
                warm_s, warm = asyncio.run(timed_run(src, tmp_path / f"out{r}b", cfg, target, data))
                assert cold["generated"] == args.examples and warm["cached"] == args.examples and warm["requests"] == 0
                rounds.append((raw_rate, cold_s, cold["requests"] / cold_s, warm_s, os.getloadavg()[0],
                               raw_cpu / args.examples * 1000, cold_cpu / args.examples * 1000))
    finally:
        stop_servers(servers)

    print(f"enrich benchmark: {args.examples} examples, latency {args.latency * 1000:.0f} ms, concurrency {args.concurrency}, "
          f"bound {bound:.0f} req/s, {os.cpu_count()} CPUs")
    print("| round | load avg | bare loop req/s | bare loop CPU ms/req | enrich first run s | enrich req/s | vs bound "
          "| vs bare loop | enrich CPU ms/req | cached run s | cache speedup |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r, (raw_rate, cold_s, rate, warm_s, load, raw_ms, cold_ms) in enumerate(rounds, 1):
        print(f"| {r} | {load:.1f} | {raw_rate:.1f} | {raw_ms:.2f} | {cold_s:.2f} | {rate:.1f} | {rate / bound:.1%} "
              f"| {rate / raw_rate:.2f} | {cold_ms:.2f} | {warm_s:.3f} | {cold_s / warm_s:.0f}x |")
    cpu_ms = statistics.median(x[6] for x in rounds)
    print(f"client CPU per request (median): {cpu_ms:.2f} ms -> at the bound it needs {cpu_ms * bound / 10:.0f}% of one core")
    rate = statistics.median(x[2] for x in rounds)
    speedup = statistics.median(x[1] / x[3] for x in rounds)
    ok_rate, ok_cache = rate >= 0.9 * bound, speedup >= 20
    print(f"median: {rate:.1f} req/s = {rate / bound:.1%} of the bound (goal >= 90%: {'met' if ok_rate else 'NOT met'}); "
          f"cache {speedup:.0f}x faster (goal >= 20x: {'met' if ok_cache else 'NOT met'})")
    if not (ok_rate and ok_cache):
        sys.exit(1)


if __name__ == "__main__":
    main()
