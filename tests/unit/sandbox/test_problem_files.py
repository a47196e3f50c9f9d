import gzip
import json

import pytest

from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.problems import Problem
from lorafleet.shared.problems import TestCase as Case
from lorafleet.shared.sandbox.problem_files import canonical_solutions, index, load_problems, load_solutions

HE = {"task_id": "HumanEval/7", "prompt": "def f(x):\n", "canonical_solution": "    return x\n",
      "test": "def check(candidate):\n    assert candidate(1) == 1\n", "entry_point": "f"}


def test_humaneval_gz_is_detected_and_converted(tmp_path):
    path = tmp_path / "he.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps(HE) + "\n")
    [p] = load_problems(path)
    assert p.id == "humaneval/HumanEval/7" and p.source == "humaneval"
    assert p.tests[0].kind == "assert" and p.tests[0].entry_point == "f"
    assert canonical_solutions([p]) == [(p.id, "def f(x):\n    return x\n")]
    assert index([p])["HumanEval/7"] is p


def test_lorafleet_problems_and_solutions(tmp_path):
    prob = Problem(id="x/1", source="x", statement="s", tests=[Case(kind="stdio", input="1", output="1")])
    (tmp_path / "p.jsonl").write_text(prob.model_dump_json() + "\n\n")
    assert load_problems(tmp_path / "p.jsonl") == [prob]
    (tmp_path / "s.jsonl").write_text(json.dumps({"problem_id": "x/1", "code": "print(1)"}) + "\n")
    assert load_solutions(tmp_path / "s.jsonl") == [("x/1", "print(1)")]


def test_bad_files_name_the_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"id": "x"}\nnot json\n')
    with pytest.raises(LorafleetError, match=r"bad.jsonl:1: not a Problem"):
        load_problems(tmp_path / "bad.jsonl", "lorafleet")
    with pytest.raises(LorafleetError, match=r"bad.jsonl:1: expected"):
        load_solutions(tmp_path / "bad.jsonl")
    (tmp_path / "bad2.jsonl").write_text('{"problem_id": "x", "code": ""}\nnot json\n')
    with pytest.raises(LorafleetError, match=r"bad2.jsonl:2: not JSON"):
        load_solutions(tmp_path / "bad2.jsonl")
    with pytest.raises(LorafleetError, match="no such file"):
        load_problems(tmp_path / "missing.jsonl")
