import pytest

from lorafleet.services.evaluator.scoring import Completion, program_for, score, syntax_error
from lorafleet.shared.problems import Problem
from lorafleet.shared.problems import TestCase as Case


def problem(source="lorafleet", starter=None):
    return Problem(id=f"{source}/1", source=source, statement="print twice n", starter_code=starter,
                   tests=[Case(kind="stdio", input="2\n", output="4\n")])


def test_program_extraction_modes():
    p = problem()
    assert program_for(p, "Here:\n```python\nprint(1)\n```\nand\n```python\nprint(2)\n```") == "print(2)"
    assert program_for(p, "   \n") is None
    he = problem("humaneval", starter="def f(x):\n")
    assert program_for(he, "    return x\n") == "def f(x):\n    return x\n"
    assert program_for(he, "```python\ndef f(x):\n    return 2\n```") == "def f(x):\n    return 2"
    assert program_for(p, "    return x\n", mode="completion") == "    return x\n"


def test_syntax_errors_are_found_without_running():
    assert syntax_error("print(1)") is None
    assert "SyntaxError" in syntax_error("def f(:\n  pass")
    assert syntax_error("x = 1\x00") is not None
    assert syntax_error("import os; os._exit(3)") is None  # compiling never executes


async def test_no_code_and_syntax_errors_skip_the_sandbox():
    async def judge(items):
        raise AssertionError(f"sandbox called for {items}")

    p = problem()
    out = await score({p.id: p}, [Completion(p.id, "base", 0, ""), Completion(p.id, "base", 1, "```python\nif x\n```"),
                                  Completion(p.id, "base", -1, "   ")], judge)
    (r,) = out
    assert (r.n, r.correct, r.greedy_passed) == (2, 0, False)
    assert [(s.index, s.verdict, s.error) for s in r.samples] == [
        (-1, "no_code", "no_code"), (0, "no_code", "no_code"), (1, "syntax_error", "syntax_error")]


async def test_unknown_problem_ids_are_named():
    async def judge(items):
        return []

    with pytest.raises(KeyError, match="nope"):
        await score({}, [Completion("nope", "base", 0, "x")], judge)
