"""APPS (`codeparrot/apps`).

Schema: problem_id, question, solutions (JSON string: list of Python 3 programs),
input_output (JSON string {inputs, outputs, fn_name?}: fn_name = call-based),
difficulty (introductory / interview / competition), starter_code, url.
"""

from __future__ import annotations

from lorafleet.services.ingest.normalise import (
    Malformed, call_tests, difficulty_from_word, json_field, require_tests, stdio_tests, text,
)
from lorafleet.shared.problems import Problem

NAME = "apps"


def tests_from_input_output(io: object) -> list:
    if not isinstance(io, dict):
        raise Malformed("bad_type:input_output", type(io).__name__)
    inputs, outputs, fn_name = io.get("inputs") or [], io.get("outputs") or [], io.get("fn_name")
    if fn_name:
        return require_tests(call_tests(str(fn_name), inputs, outputs, unwrap=True))
    return require_tests(stdio_tests(inputs, outputs))


def solutions_from(value: object) -> list[str]:
    sols = json_field(value, "solutions", default=[])
    if not isinstance(sols, list):
        raise Malformed("bad_type:solutions", type(sols).__name__)
    return [s.replace("\r\n", "\n") for s in sols if isinstance(s, str) and s.strip()]


def to_problem(row: dict, index: int | str) -> Problem:
    pid = row.get("problem_id", index)
    statement = text(row.get("question"), "question")
    tests = tests_from_input_output(json_field(row.get("input_output"), "input_output", default={}))
    raw = row.get("difficulty")
    return Problem(
        id=f"{NAME}/{pid}",
        source=NAME,
        statement=statement,
        starter_code=text(row.get("starter_code"), "starter_code", required=False),
        tests=tests,
        solutions=solutions_from(row.get("solutions")),
        difficulty=difficulty_from_word(raw),
        difficulty_raw=str(raw) if raw is not None else None,
        meta={"url": row.get("url"), "call_based": tests[0].kind == "call", "tests_total": len(tests)},
    )
