"""Reading the files `lorafleet sandbox judge` takes: problems (ours or HumanEval's) and solutions."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.jsonl import iter_json_objects
from lorafleet.shared.problems import Limits, Problem, TestCase

Source = Literal["humaneval", "lorafleet"]


_lines = iter_json_objects


def humaneval_problem(rec: dict) -> Problem:
    """One HumanEval record (task_id, prompt, canonical_solution, test, entry_point) as a Problem."""
    return Problem(
        id=f"humaneval/{rec['task_id']}",
        source="humaneval",
        title=rec["entry_point"],
        statement=rec["prompt"],
        starter_code=rec["prompt"],
        tests=[TestCase(kind="assert", script=rec["test"], entry_point=rec["entry_point"])],
        limits=Limits(time_s=3.0, memory_mb=512),
        solutions=[rec["prompt"] + rec["canonical_solution"]],
        meta={"task_id": rec["task_id"], "entry_point": rec["entry_point"]},
    )


def detect_source(path: Path) -> Source:
    for _, obj in _lines(path):
        return "humaneval" if "task_id" in obj and "canonical_solution" in obj else "lorafleet"
    raise LorafleetError(f"{path}: no problems in the file")


def load_problems(path: Path, source: Source | None = None) -> list[Problem]:
    source = source or detect_source(path)
    out = []
    for n, obj in _lines(path):
        try:
            out.append(humaneval_problem(obj) if source == "humaneval" else Problem.model_validate(obj))
        except (KeyError, ValidationError) as e:
            what = "a HumanEval record (task_id, prompt, canonical_solution, test, entry_point)" if source == "humaneval" \
                else "a Problem (lorafleet format; --source humaneval for HumanEval files)"
            raise LorafleetError(f"{path}:{n}: not {what}: {e}") from e
    if not out:
        raise LorafleetError(f"{path}: no problems in the file")
    return out


def load_solutions(path: Path) -> list[tuple[str, str]]:
    """(problem_id, code) pairs from a JSONL of {"problem_id": ..., "code": ...}."""
    out = []
    for n, obj in _lines(path):
        if not isinstance(obj.get("problem_id"), str) or not isinstance(obj.get("code"), str):
            raise LorafleetError(f'{path}:{n}: expected {{"problem_id": str, "code": str}}')
        out.append((obj["problem_id"], obj["code"]))
    return out


def canonical_solutions(problems: list[Problem]) -> list[tuple[str, str]]:
    return [(p.id, s) for p in problems for s in p.solutions[:1]]


def index(problems: list[Problem]) -> dict[str, Problem]:
    """By id, and by the source's own id (HumanEval's "HumanEval/0" for "humaneval/HumanEval/0")."""
    out: dict[str, Problem] = {}
    for p in problems:
        task = p.meta.get("task_id")
        if isinstance(task, str):
            out.setdefault(task, p)
    for p in problems:
        out[p.id] = p
    return out
