"""`lorafleet data import` (one source) and `lorafleet data build` (a training config's
data section): the same core as the service, without NATS."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional

import typer


@contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    """A progress bar on a terminal (stderr); None elsewhere."""
    if not (enabled and sys.stderr.isatty()):
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed} rows"),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(what: str, done: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(f"reading {what}", total=None)
            bar.update(tasks[what], completed=done)

        yield update


def _print(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="ingest", show_header=False)
    for key in ("problems", "solutions", "verified", "rejected", "malformed", "skipped", "duplicates_removed",
                "decontaminated", "no_verified_solution", "out_of_domain", "train", "eval", "train_problems",
                "eval_problems", "validation_problems", "by_domain", "by_source", "validation_cutoff", "seconds",
                "out_dir"):
        if key in report:
            value = report[key]
            table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
    Console().print(table)


def _judge(verify: bool, workers: int | None):
    if not verify:
        return None
    from lorafleet.services.ingest.verify import sandbox_judge

    return sandbox_judge(workers)


def register(groups: dict[str, typer.Typer]) -> None:
    data = groups["data"]

    @data.command("import")
    def import_source(
        source: Annotated[str, typer.Option("--source", help="codecontests | apps | taco | livecodebench | humaneval | lorafleet | production | synthetic")],
        path: Annotated[Optional[Path], typer.Option("--path", help="jsonl, jsonl.gz, json, parquet or a save_to_disk directory")] = None,
        hub_name: Annotated[Optional[str], typer.Option("--hub-name", help="a hub dataset name (needs network)")] = None,
        split: Annotated[Optional[str], typer.Option("--split")] = None,
        out: Annotated[Optional[Path], typer.Option("--out", help="write a dataset artifact directory here")] = None,
        limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="read at most this many problems")] = None,
        verify: Annotated[bool, typer.Option("--verify/--no-verify", help="run every solution in the sandbox")] = True,
        max_tests: Annotated[int, typer.Option("--max-tests", min=1, help="tests per problem (deterministic sample)")] = 20,
        workers: Annotated[Optional[int], typer.Option("--workers", min=1, help="sandbox workers (default: CPU count)")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print one JSON object as the last line")] = False,
    ) -> None:
        """Run one source through normalise, verify, dedup, classify and split (no NATS)."""
        from lorafleet.services.ingest.core import build
        from lorafleet.services.ingest.sources import SOURCE_TYPES, check_type
        from lorafleet.shared.config import DataSection, SourceSection
        from lorafleet.shared.errors import LorafleetError

        check_type(source)
        if path is None and hub_name is None and source == "humaneval":
            from lorafleet.services.ingest.sources.humaneval import default_path

            path = Path(default_path())
        if path is None and hub_name is None and source not in ("humaneval", "synthetic"):
            raise LorafleetError(f"--source {source} needs --path FILE (or --hub-name NAME); sources: {', '.join(SOURCE_TYPES)}")
        # LiveCodeBench has no solutions: it is read as validation problems.
        role = "validation" if source == "livecodebench" else "train"
        location = {"path": str(path) if path else None, "hub_name": hub_name, "split": split} if source != "synthetic" else {}
        spec = SourceSection(type=source, limit=limit, role=role, **location)
        cfg = DataSection(verify={"enabled": verify, "max_tests_per_problem": max_tests}, min_examples=0)
        with _progress(True) as progress:
            report = build([spec], cfg, judge=_judge(verify, workers), out_dir=out, progress=progress,
                           min_examples=0, domains=[])
        _print(report, as_json)

    @data.command("build")
    def build_config(
        config: Annotated[Path, typer.Argument(help="a training config YAML (its `data` section is used)")],
        out: Annotated[Path, typer.Option("--out", help="the dataset artifact directory to write")],
        workers: Annotated[Optional[int], typer.Option("--workers", min=1, help="sandbox workers (default: CPU count)")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print one JSON object as the last line")] = False,
    ) -> None:
        """Build the dataset of a training config (sources or train_file/eval_file) into OUT."""
        from lorafleet.services.ingest.pipeline import build_dataset
        from lorafleet.shared.config import load_config

        cfg = load_config(config)
        with _progress(True) as progress:
            judge = _judge(cfg.data.verify.enabled, workers or cfg.data.verify.workers)
            report = build_dataset(cfg.data, judge=judge, out_dir=out, progress=progress)
        _print(report, as_json)
