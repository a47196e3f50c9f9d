"""Ingest throughput on a generated APPS-format source (run by hand: `python benchmarks/ingest.py`).

1. normalise + dedup + classify (+ split and write) with verification off, on
   100,000 problems: problems per second (goal >= 5,000/s).
2. verification on, on a slice: verified solutions per second, next to the sandbox's
   own programs per second on the same (code, tests) items through `judge_many`,
   measured in the same run (goal: verification >= 80% of raw sandbox throughput).
3. peak RSS of the process (goal < 2 GiB).

Timings on a shared machine are noisy; the ratios are measured within one run.
Options: --problems N (default 100000), --verify-problems N (default 1500), --workers N.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

from lorafleet.services.ingest.classify import classify_problem
from lorafleet.services.ingest.core import build
from lorafleet.services.ingest.dedup import NearDuplicates, unique_solutions
from lorafleet.services.ingest.normalise import Malformed
from lorafleet.services.ingest.sources import problems as load_problems
from lorafleet.services.ingest.verify import select_tests, sandbox_judge
from lorafleet.shared.config import DataSection, SourceSection

WORDS = ("array integer string query graph tree value element index sum maximum minimum number sequence "
         "print output input line test case each given find count pair order sort distinct prefix suffix "
         "segment operation answer possible minimal cost path node edge weight color cell grid row column "
         "move step time day city road friend game player score coin box item price").split()


def make_source(path: Path, n: int, seed: int = 0) -> None:
    """APPS rows: problem k adds k to each input; 3% re-post an earlier statement (near-duplicates)."""
    rng = random.Random(seed)
    statements: list[str] = []
    with path.open("w") as f:
        for pid in range(n):
            if statements and rng.random() < 0.03:
                statement = rng.choice(statements) + " "
            else:
                words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 90)))
                statement = f"{words}. Read an integer x and print x plus {pid}. 1 <= x <= {rng.randint(10, 10**6)}."
                if len(statements) < 5000:
                    statements.append(statement)
            xs = [rng.randint(1, 1000) for _ in range(3)]
            io = {"inputs": [f"{x}\n" for x in xs], "outputs": [f"{x + pid}\n" for x in xs]}
            sols = [f"x = int(input())\nprint(x + {pid})\n", f"print(int(input()) + {pid})  # short\n"]
            if pid % 10 == 0:
                sols.append(f"print(int(input()) - {pid})\n")  # wrong
            f.write(json.dumps({"problem_id": pid, "question": statement, "solutions": json.dumps(sols),
                                "input_output": json.dumps(io), "difficulty": "interview", "url": "", "starter_code": ""}) + "\n")


def load() -> str:
    """The machine is shared: each figure says what the load average was when it was taken."""
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=100_000)
    ap.add_argument("--verify-problems", type=int, default=1500)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "apps.jsonl"
        t = time.perf_counter()
        make_source(src, args.problems)
        print(f"generated {args.problems} APPS rows ({src.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.1f}s")

        # Baseline in the same run: just decoding the rows (json.loads per line).
        t, c = time.perf_counter(), time.process_time()
        with src.open("rb") as f:
            rows = sum(1 for line in f if json.loads(line))
        base_wall, base_cpu = time.perf_counter() - t, time.process_time() - c
        print(f"baseline, json.loads of every row: {rows / base_wall:,.0f} rows/s wall, {rows / base_cpu:,.0f} rows/CPU-s; {load()}")

        # The three stages alone, as the pipeline calls them (no spool, no split, no write).
        t, c = time.perf_counter(), time.process_time()
        index, n, merged = NearDuplicates(0.8, 128), 0, 0
        for p in load_problems(SourceSection(type="apps", path=str(src))):
            if isinstance(p, Malformed):
                continue
            p = classify_problem(p)
            unique_solutions(p.solutions)
            merged += bool(index.add(str(n), index.signature(p.statement)))
            n += 1
        stage_wall, stage_cpu = time.perf_counter() - t, time.process_time() - c
        print(f"normalise + classify + dedup stages: {n} problems in {stage_wall:.1f}s = {n / stage_wall:,.0f} problems/s "
              f"wall, {n / stage_cpu:,.0f} problems/CPU-s (goal 5,000/s); {merged} near-duplicates found; {load()}")
        del index  # the pipeline builds its own; peak RSS should be the pipeline's

        off = DataSection(domains=[], min_examples=0, verify={"enabled": False})
        t, c = time.perf_counter(), time.process_time()
        report = build([SourceSection(type="apps", path=str(src))], off, judge=None, out_dir=Path(tmp) / "ds", domains=[])
        secs, cpu = time.perf_counter() - t, time.process_time() - c
        rate, cpu_rate = report["problems"] / secs, report["problems"] / cpu
        print(f"whole pipeline, verification off (+ spool, merge, split, write): {report['problems']} problems in "
              f"{secs:.1f}s = {rate:,.0f} problems/s wall, {cpu_rate:,.0f} problems/CPU-s "
              f"(goal 5,000/s: {'met' if rate >= 5000 else 'NOT met'} wall, {'met' if cpu_rate >= 5000 else 'NOT met'} "
              f"per CPU-s); {cpu_rate / (rows / base_cpu):.3f} x the json.loads baseline; duplicate problems merged: "
              f"{report['duplicate_problems']}, duplicate solutions: {report['duplicate_solutions']}; {load()}")

        # verification on: the same slice through the pipeline and straight through the sandbox
        judge = sandbox_judge(args.workers)
        cut = Path(tmp) / "slice.jsonl"
        with src.open() as fi, cut.open("w") as fo:
            for _, line in zip(range(args.verify_problems), fi):
                fo.write(line)
        items = []
        for p in load_problems(SourceSection(type="apps", path=str(cut))):
            items += [(code, select_tests(p, 20), p.limits, False) for code in p.solutions]
        judge(items[:50])  # warm the fork servers for both measurements
        # Interleaved, best of two each: the load on a shared machine drifts within minutes.
        on = DataSection(domains=[], min_examples=0)
        raw_secs, secs = float("inf"), float("inf")
        for _ in range(2):
            t = time.perf_counter()
            raw = judge(items)
            raw_secs = min(raw_secs, time.perf_counter() - t)
            t = time.perf_counter()
            report = build([SourceSection(type="apps", path=str(cut))], on, judge=judge, out_dir=None, domains=[])
            secs = min(secs, time.perf_counter() - t)
        raw_rate = len(raw) / raw_secs
        judged = report["solutions"] - report["duplicate_solutions"]
        print(f"sandbox judge_many: {len(raw)} programs in {raw_secs:.1f}s = {raw_rate:,.1f} programs/s (best of 2)")
        print(f"verification on: {report['solutions']} candidates ({judged} distinct programs judged), "
              f"{report['verified']} verified in {secs:.1f}s = {judged / secs:,.1f} programs/s, "
              f"{report['verified'] / secs:,.1f} verified solutions/s (best of 2)")
        ratio = (judged / secs) / raw_rate
        print(f"verification / raw sandbox throughput (programs/s): {ratio:.2f} "
              f"(goal >= 0.80: {'met' if ratio >= 0.8 else 'NOT met'})")
    rss = peak_rss_mb()
    print(f"peak RSS: {rss:,.0f} MiB (goal < 2048: {'met' if rss < 2048 else 'NOT met'})")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
