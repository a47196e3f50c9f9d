"""The project's own Problem JSONL (what ingest writes to eval_problems.jsonl, what
tests and users hand-write): each row is a `Problem`."""

from __future__ import annotations

from pydantic import ValidationError

from lorafleet.services.ingest.normalise import Malformed, require_tests
from lorafleet.shared.problems import Problem

NAME = "lorafleet"


def to_problem(row: dict, index: int | str) -> Problem:
    try:
        problem = Problem.model_validate(row)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise Malformed("bad_problem", f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    require_tests(problem.tests)
    for i, t in enumerate(problem.tests):
        missing = {"stdio": t.output is None, "call": not t.fn_name, "assert": not t.script}[t.kind]
        if missing:
            raise Malformed("bad_test", f"test {i} ({t.kind}) lacks {'output' if t.kind == 'stdio' else 'fn_name' if t.kind == 'call' else 'script'}")
    return problem
