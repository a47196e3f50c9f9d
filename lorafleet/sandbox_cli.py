"""`lorafleet sandbox run` and `lorafleet sandbox judge`."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Optional

import typer

from lorafleet.shared.errors import LorafleetError

SOURCES = ("humaneval", "lorafleet")


def register(groups: dict[str, typer.Typer]) -> None:
    group = groups["sandbox"]
    group.command("run")(run_command)
    group.command("judge")(judge_command)


def _read_stdin_arg(stdin: Optional[str]) -> str:
    if stdin is None:
        return ""
    if stdin == "-":
        return sys.stdin.read()
    path = Path(stdin)
    if not path.is_file():
        raise LorafleetError(f"--stdin {stdin}: no such file (give a file, or - to read this process's stdin)")
    return path.read_text(encoding="utf-8", errors="surrogateescape")


def run_command(
    program: Annotated[Path, typer.Argument(help="the Python program to run")],
    stdin: Annotated[Optional[str], typer.Option("--stdin", help="file fed to the program's stdin, or - for ours")] = None,
    time_limit: Annotated[float, typer.Option("--time-limit", help="CPU seconds", min=0.01)] = 4.0,
    memory_mb: Annotated[int, typer.Option("--memory-mb", help="address space per process, MiB", min=32)] = 512,
    wall_limit: Annotated[Optional[float], typer.Option("--wall-limit", help="wall-clock ceiling in seconds whatever the load (default 3 x time + 5); an idle run stops at time + 0.3 s of wall time not spent waiting for a CPU")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print exactly one JSON object")] = False,
    require_isolation: Annotated[bool, typer.Option(
        "--require-isolation", help="refuse to run unless every isolation layer is active")] = False,
) -> None:
    """Run one untrusted program in the sandbox and show its verdict, output and isolation layers."""
    from lorafleet.shared.sandbox import RunLimits, run

    if not program.is_file():
        raise LorafleetError(f"{program}: no such file (give the path of a Python program)")
    code = program.read_text(encoding="utf-8", errors="surrogateescape")
    limits = RunLimits(time_s=time_limit, memory_mb=memory_mb, wall_s=wall_limit, require_isolation=require_isolation)
    result = run(code, _read_stdin_arg(stdin), limits)
    if as_json:
        print(json.dumps(result.public()))
    else:
        _print_run(result)
    raise typer.Exit(0 if result.verdict == "ok" else 1)


def _print_run(result) -> None:
    from rich.console import Console

    con = Console(highlight=False)
    style = "green" if result.verdict == "ok" else "red"
    con.print(f"verdict: [{style}]{result.verdict}[/]" + (f"  ({result.detail})" if result.detail else ""))
    con.print(f"exit code: {result.exit_code if result.signal is None else f'signal {result.signal}'}"
              f"   wall: {result.wall_ms:.1f} ms   cpu: {result.cpu_ms:.1f} ms   peak rss: {result.max_rss_kb // 1024} MiB")
    con.print(f"isolation: {', '.join(result.isolation) or 'none'}")
    for name in ("stdout", "stderr"):
        text = getattr(result, name)
        cut = " (cut at the cap)" if getattr(result, f"{name}_truncated") else ""
        con.print(f"--- {name}{cut} ---", style="bold")
        con.out(text if text.endswith("\n") or not text else text + "\n", highlight=False)


def judge_command(
    problems: Annotated[Path, typer.Option("--problems", help="problems: lorafleet JSONL or HumanEval jsonl[.gz]")],
    solutions: Annotated[str, typer.Option(
        "--solutions", help='JSONL of {"problem_id", "code"}, or "canonical" for the problems\' own solutions')],
    source: Annotated[Optional[str], typer.Option("--source", help="humaneval | lorafleet (default: detected)")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="parallel runs (default: the machine's cores)", min=1)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON line per solution, then a summary line")] = False,
    time_limit: Annotated[Optional[float], typer.Option("--time-limit", help="override every problem's CPU seconds")] = None,
    require_isolation: Annotated[bool, typer.Option(
        "--require-isolation", help="refuse to run unless every isolation layer is active")] = False,
) -> None:
    """Judge solutions against problems' tests; prints a verdict per solution and a summary."""
    from lorafleet.shared.sandbox import RunLimits, default_sandbox
    from lorafleet.shared.sandbox.problem_files import canonical_solutions, index, load_problems, load_solutions

    if source is not None and source not in SOURCES:
        raise LorafleetError(f"--source {source}: expected one of {', '.join(SOURCES)}")
    probs = load_problems(problems, source)  # type: ignore[arg-type]
    by_id = index(probs)
    if solutions == "canonical":
        sols = canonical_solutions(probs)
        if not sols:
            raise LorafleetError(f"{problems}: the problems carry no solutions to judge (--solutions canonical)")
    else:
        sols = load_solutions(Path(solutions))
    unknown = [pid for pid, _ in sols if pid not in by_id]
    if unknown:
        raise LorafleetError(f"{solutions}: {len(unknown)} solutions name unknown problems, e.g. {unknown[0]!r}")
    items = []
    for pid, code in sols:
        p = by_id[pid]
        overrides = {"time_s": time_limit} if time_limit else {}
        limits = RunLimits.from_problem(p.limits, require_isolation=require_isolation, **overrides)
        items.append((code, p.tests, limits, p.exact_compare))
    t0 = time.monotonic()
    judgements = default_sandbox().judge_many(items, workers=workers)
    elapsed = time.monotonic() - t0
    counts = Counter(j.verdict for j in judgements)
    summary = {
        "passed": counts.get("passed", 0),
        "total": len(judgements),
        "verdicts": dict(counts),
        "wall_s": round(elapsed, 3),
        "programs_per_s": round(len(judgements) / elapsed, 1) if elapsed > 0 else None,
        "isolation": judgements[0].isolation if judgements else [],
    }
    if as_json:
        for (pid, _), j in zip(sols, judgements):
            print(json.dumps({"problem_id": by_id[pid].id, "verdict": j.verdict, "passed_tests": j.passed_tests,
                              "total_tests": j.total_tests, "detail": j.detail}))
        print(json.dumps({"summary": summary}))
        return
    from rich.console import Console
    from rich.table import Table

    con = Console(highlight=False)
    failed = [(pid, j) for (pid, _), j in zip(sols, judgements) if not j.passed]
    if failed:
        table = Table("problem", "verdict", "tests", "detail", title="failures")
        for pid, j in failed[:50]:
            table.add_row(by_id[pid].id, j.verdict, f"{j.passed_tests}/{j.total_tests}", j.detail[:100])
        con.print(table)
        if len(failed) > 50:
            con.print(f"... and {len(failed) - 50} more (--json lists all)")
    con.print(f"passed {summary['passed']}/{summary['total']}  "
              + "  ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
              + f"  ({elapsed:.1f} s, {summary['programs_per_s']}/s)")
    con.print(f"isolation: {', '.join(summary['isolation'])}")
