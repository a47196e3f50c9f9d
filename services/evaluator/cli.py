"""`lorafleet eval run` and `lorafleet eval score`: evaluations without the bus."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from lorafleet.shared.errors import LorafleetError


def parse_ks(text: str) -> list[int]:
    try:
        ks = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise LorafleetError(f"--k {text!r}: expected comma-separated integers such as 1,5") from None
    if not ks or ks[0] < 1:
        raise LorafleetError(f"--k {text!r}: values must be >= 1, e.g. 1,5")
    return ks


def _print_metrics(metrics: dict[str, Any], criteria: list, report: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    variants = [v for v in ("base", "adapter", "samples") if v in metrics]
    table = Table(title=f"{metrics.get('problems')} problems")
    table.add_column("metric")
    for v in variants:
        table.add_column(v, justify="right")
    keys = [f"pass@{k}" for k in metrics["k"]] + ["greedy_pass@1", "error_rate", "samples"]
    for key in keys:
        vals = [(metrics[v] or {}).get(key) for v in variants]
        if all(x is None for x in vals):
            continue
        table.add_row(key, *["n/a" if x is None else (f"{x:.4f}" if isinstance(x, float) else str(x)) for x in vals])
    for key in ("ttft_s_median", "tpot_s_median"):
        vals = [((metrics[v] or {}).get("latency") or {}).get(key) for v in variants]
        if any(x is not None for x in vals):
            table.add_row(key.replace("_s_median", " ms (median)"), *["n/a" if x is None else f"{1000 * x:.2f}" for x in vals])
    console.print(table)
    for v in variants:
        verdicts = (metrics[v] or {}).get("verdicts") or {}
        console.print(f"{v} verdicts: " + ", ".join(f"{k}={n}" for k, n in verdicts.items()))
    if d := metrics.get("delta_pass@1"):
        console.print(f"Δpass@1 = {d['mean']:+.4f}  95% CI [{d['low']:+.4f}, {d['high']:+.4f}]")
    if metrics.get("latency_increase") is not None:
        console.print(f"latency increase (adapter vs base) = {100 * metrics['latency_increase']:+.1f}%")
    if criteria:
        gate = Table(title="gate")
        for col in ("criterion", "measured", "threshold", "result"):
            gate.add_column(col)
        for c in criteria:
            measured = "n/a" if c.measured is None else f"{c.measured:.4f}"
            gate.add_row(c.name, measured, f"{c.comparison} {c.threshold}", "[green]pass[/]" if c.passed else "[red]fail[/]")
        console.print(gate)
        console.print("gate: " + ("[green]PASSED[/]" if all(c.passed for c in criteria) else "[red]FAILED[/]"))
    if report:
        console.print(f"report: {report / 'report.html'}")


def score_cmd(
    problems: Annotated[Path, typer.Option("--problems", help="Problem JSONL, or HumanEval.jsonl(.gz)")],
    samples: Annotated[Path, typer.Option("--samples", help='JSONL of {"problem_id", "completion"}, several per problem')],
    source: Annotated[str, typer.Option("--source", help="humaneval | lorafleet | livecodebench | ... | auto")] = "auto",
    k: Annotated[str, typer.Option("--k", help="comma-separated k values")] = "1,5",
    mode: Annotated[str, typer.Option("--mode", help="auto | chat (extract the code block) | completion (prompt + completion)")] = "auto",
    workers: Annotated[Optional[int], typer.Option("--workers", help="sandbox workers (default: the machine's cores)")] = None,
    after: Annotated[Optional[str], typer.Option("--after", help="only problems dated after this ISO date (LiveCodeBench cutoff)")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="also write a report directory here")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="last line printed: one JSON object with the scores")] = False,
) -> None:
    """Score given samples with sandbox-judged unbiased pass@k (no model)."""
    from lorafleet.services.evaluator.judging import make_judge
    from lorafleet.services.evaluator.local import finish, score_samples
    from lorafleet.services.evaluator.problems_io import load_problems, load_samples

    ks = parse_ks(k)
    if mode not in ("auto", "chat", "completion"):
        raise LorafleetError(f"--mode {mode!r}: use auto, chat or completion")
    probs = load_problems(problems, source, after=after)
    rows = load_samples(samples)
    results = asyncio.run(score_samples(probs, rows, make_judge(workers), mode))  # type: ignore[arg-type]
    n_min = min(r.n for r in results)
    too_big = [x for x in ks if x > n_min]
    if too_big:
        typer.echo(f"warning: pass@{too_big} needs at least that many samples per problem; the smallest n is {n_min}", err=True)
    metrics, _, path = finish(results, [], ks, None, {"title": f"samples {samples.name}", "problems_file": str(problems),
                                                      "samples_file": str(samples)}, report)
    summary = metrics["samples"]
    if as_json:
        out = {f"pass@{x}": summary.get(f"pass@{x}") for x in ks}
        out.update(problems=summary["problems"], samples=summary["samples"], verdicts=summary["verdicts"],
                   errors=summary["errors"], error_rate=summary["error_rate"])
        if path:
            out["report"] = str(path)
        print(json.dumps(out))
    else:
        _print_metrics(metrics, [], path)


def run_cmd(
    adapter: Annotated[str, typer.Option("--adapter", help="adapter directory (or, for --backend openai, its served model name)")],
    base: Annotated[str, typer.Option("--base", help="base model directory (or served name for openai)")],
    problems: Annotated[Path, typer.Option("--problems", help="Problem JSONL (eval_problems.jsonl), HumanEval.jsonl(.gz), ...")],
    n: Annotated[int, typer.Option("--n", help="samples per problem (>= max k)")] = 10,
    k: Annotated[str, typer.Option("--k", help="comma-separated k values")] = "1,5",
    backend: Annotated[str, typer.Option("--backend", help="transformers | openai | vllm")] = "transformers",
    endpoint: Annotated[Optional[str], typer.Option("--endpoint", help="openai backend: base URL, e.g. http://127.0.0.1:8000/v1")] = None,
    source: Annotated[str, typer.Option("--source", help="problems file format: auto | lorafleet | humaneval | livecodebench | ...")] = "auto",
    out: Annotated[Path, typer.Option("--out", help="report directory")] = Path("eval-report"),
    config: Annotated[Optional[Path], typer.Option("--config", help="training config: its evaluation + gate sections are the defaults")] = None,
    temperature: Annotated[Optional[float], typer.Option("--temperature")] = None,
    top_p: Annotated[Optional[float], typer.Option("--top-p")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option("--max-new-tokens")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed")] = None,
    greedy: Annotated[Optional[bool], typer.Option("--greedy/--no-greedy", help="also a greedy sample per problem")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="first N problems only")] = None,
    load_adapter: Annotated[bool, typer.Option("--load-adapter", help="openai: POST /v1/load_lora_adapter with --adapter-path first")] = False,
    adapter_path: Annotated[Optional[str], typer.Option("--adapter-path", help="openai + --load-adapter: the path the server loads")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="sandbox workers")] = None,
    after: Annotated[Optional[str], typer.Option("--after", help="only problems dated after this ISO date (LiveCodeBench cutoff)")] = None,
) -> None:
    """Evaluate base vs base+adapter on a problem set and write the report (no bus)."""
    from pydantic import ValidationError

    from lorafleet.shared.config import EvaluationSection, GateSection, load_config

    ks = parse_ks(k)
    if n < ks[-1]:
        raise LorafleetError(f"--n {n} is below the largest k {ks[-1]}: unbiased pass@k needs n >= k")
    if config is not None:
        cfg = load_config(config)
        ev, gate = cfg.evaluation, cfg.gate
    else:
        ev, gate = EvaluationSection(), GateSection()
    updates = {name: val for name, val in dict(n=n, k=ks, backend=backend, endpoint=endpoint, temperature=temperature,
                                               top_p=top_p, max_new_tokens=max_new_tokens, seed=seed, greedy=greedy).items()
               if val is not None}
    try:
        ev = EvaluationSection.model_validate({**ev.model_dump(), **updates})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise LorafleetError(f"--{'-'.join(map(str, err['loc'])).replace('_', '-')}: {err['msg']}") from None
    asyncio.run(_run(ev, gate, adapter, base, problems, source, out, limit, load_adapter, adapter_path, workers, after))


async def _run(ev, gate, adapter: str, base: str, problems: Path, source: str, out: Path, limit: int | None,
               load_adapter: bool, adapter_path: str | None, workers: int | None, after: str | None) -> None:
    from rich.progress import Progress

    from lorafleet.services.evaluator.backends import make_backend
    from lorafleet.services.evaluator.evaluate import run_evaluation
    from lorafleet.services.evaluator.judging import make_judge
    from lorafleet.services.evaluator.local import finish
    from lorafleet.services.evaluator.models import SamplingParams
    from lorafleet.services.evaluator.problems_io import load_problems

    probs = load_problems(problems, source, limit=limit or ev.max_problems, after=after)
    local_adapter = Path(adapter).is_dir()
    if ev.backend != "openai" and not local_adapter:
        raise LorafleetError(f"--adapter {adapter}: not a directory; the {ev.backend} backend needs a local peft adapter directory")
    rank = 64
    if local_adapter:
        try:
            rank = int(json.loads((Path(adapter) / "adapter_config.json").read_text()).get("r", 64))
        except (OSError, ValueError) as exc:
            raise LorafleetError(f"--adapter {adapter}: unreadable adapter_config.json ({exc})") from None
    adapter_name = Path(adapter).name if local_adapter else adapter
    backend = await asyncio.to_thread(
        make_backend, ev.backend, base_model=base, adapter_path=adapter if local_adapter else None,
        adapter_name=adapter_name, endpoint=ev.endpoint, api_key=os.environ.get(ev.api_key_env), lora_rank=rank,
        concurrency=ev.concurrency, timeout_s=ev.timeout_s, max_retries=ev.max_retries, batch_size=ev.batch_size, seed=ev.seed,
    )
    try:
        if load_adapter:
            if ev.backend != "openai":
                raise LorafleetError("--load-adapter is for --backend openai (vLLM runtime LoRA loading)")
            await backend.load_adapter(adapter_name, adapter_path or str(Path(adapter).resolve()))  # type: ignore[attr-defined]
        params = SamplingParams(n=ev.n, temperature=ev.temperature, top_p=ev.top_p, max_new_tokens=ev.max_new_tokens, seed=ev.seed)
        with Progress(transient=True) as progress:
            task = progress.add_task("generating", total=len(probs))
            result = await run_evaluation(probs, backend, params, make_judge(workers), greedy=ev.greedy,
                                          chunk_size=ev.batch_size, on_progress=lambda d, t: progress.update(task, completed=d))
    finally:
        await backend.aclose()
    meta = {"adapter_name": adapter_name, "adapter": adapter, "base_model": base, "backend": ev.backend,
            "problems_file": str(problems), "problems": len(probs), "n": ev.n, "temperature": ev.temperature,
            "top_p": ev.top_p, "max_new_tokens": ev.max_new_tokens, "seed": ev.seed}
    metrics, criteria, path = finish(result.problems, result.latency, ev.k, gate, meta, out,
                                     resamples=ev.bootstrap_resamples, seed=ev.seed)
    _print_metrics(metrics, criteria, path)


def register(groups: dict[str, typer.Typer]) -> None:
    app = groups["eval"]
    app.command("run")(run_cmd)
    app.command("score")(score_cmd)
