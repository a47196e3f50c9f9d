"""Reading evaluation sets (the project's Problem JSONL, HumanEval's jsonl/.gz,
LiveCodeBench, ...) through ingest's loaders, and sample files for `eval score`."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.jsonl import iter_json_objects
from lorafleet.shared.problems import Problem


def guess_source(path: Path) -> str:
    name = path.name.lower()
    return "humaneval" if "humaneval" in name else "lorafleet"


def load_problems(path: str | Path, source: str = "auto", limit: int | None = None, after: str | None = None) -> list[Problem]:
    """Problems of an evaluation set; `after` (ISO date) keeps only problems dated later
    (LiveCodeBench after the training data's cutoff), dropping undated ones."""
    from lorafleet.services.ingest.sources import check_type, problems
    from lorafleet.services.ingest.normalise import Malformed
    from lorafleet.shared.config import SourceSection

    path = Path(path)
    if not path.exists():
        raise LorafleetError(f"problems file {path} not found: pass a Problem JSONL (e.g. eval_problems.jsonl) "
                             "or HumanEval.jsonl.gz")
    source = guess_source(path) if source == "auto" else check_type(source)
    if after:
        try:
            after = date.fromisoformat(after[:10]).isoformat()
        except ValueError:
            raise LorafleetError(f"--after {after!r}: expected an ISO date such as 2025-01-31") from None
    out: list[Problem] = []
    bad: list[str] = []
    for item in problems(SourceSection(type=source, path=str(path)), None):
        if isinstance(item, Malformed):
            bad.append(str(item))
            continue
        if after and not (item.contest_date and item.contest_date[:10] > after):
            continue
        out.append(item)
        if limit and len(out) >= limit:
            break
    if not out:
        detail = f"; first error: {bad[0]}" if bad else (f"; none dated after {after}" if after else "")
        raise LorafleetError(f"{path}: no usable {source} problems{detail} (is --source right?)")
    return out


def load_samples(path: str | Path) -> list[dict[str, Any]]:
    """JSONL of {"problem_id", "completion"}; several lines per problem."""
    path = Path(path)
    if not path.is_file():
        raise LorafleetError(f"samples file {path} not found: pass JSONL lines of {{\"problem_id\", \"completion\"}}")
    rows = []
    for lineno, row in iter_json_objects(path):
        if not isinstance(row.get("problem_id"), str) or not isinstance(row.get("completion"), str):
            raise LorafleetError(f"{path}:{lineno}: each line needs string fields \"problem_id\" and \"completion\"")
        rows.append(row)
    if not rows:
        raise LorafleetError(f"{path}: no samples")
    return rows


def problem_index(problems: list[Problem]) -> dict[str, Problem]:
    """Problems by id, and by the source's own id (HumanEval samples say "HumanEval/0")."""
    index: dict[str, Problem] = {}
    for p in problems:
        index[p.id] = p
        if task_id := p.meta.get("task_id"):
            index.setdefault(str(task_id), p)
    return index


def read_problems_jsonl(path: str | Path) -> list[Problem]:
    """The project's own format only (eval_problems.jsonl inside artifacts)."""
    return [Problem.model_validate_json(line) for line in Path(path).read_text().splitlines() if line.strip()]
