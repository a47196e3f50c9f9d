import pytest

from lorafleet.services.evaluator.problems_io import load_problems, load_samples, problem_index
from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.problems import Problem
from lorafleet.shared.problems import TestCase as Case


def write(tmp_path, problems):
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(p.model_dump_json() + "\n" for p in problems))
    return path


def problem(i, date=None):
    return Problem(id=f"livecodebench/{i}", source="livecodebench", statement="s", contest_date=date,
                   tests=[Case(kind="stdio", input="1\n", output="1\n")])


def test_after_keeps_only_problems_dated_later(tmp_path):
    path = write(tmp_path, [problem(1, "2024-05-01"), problem(2, "2024-09-30T00:00:00"), problem(3)])
    assert [p.id for p in load_problems(path, "lorafleet")] == ["livecodebench/1", "livecodebench/2", "livecodebench/3"]
    assert [p.id for p in load_problems(path, "lorafleet", after="2024-06-01")] == ["livecodebench/2"]
    with pytest.raises(LorafleetError, match="none dated after 2025-01-01"):
        load_problems(path, "lorafleet", after="2025-01-01")
    with pytest.raises(LorafleetError, match="ISO date"):
        load_problems(path, "lorafleet", after="June")


def test_samples_file_errors_name_the_line(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"problem_id": "a", "completion": "x"}\nnot json\n')
    with pytest.raises(LorafleetError, match=r"s.jsonl:2: not JSON"):
        load_samples(path)


def test_humaneval_ids_resolve_by_task_id():
    p = Problem(id="humaneval/0", source="humaneval", statement="s", tests=[], meta={"task_id": "HumanEval/0"})
    index = problem_index([p])
    assert index["HumanEval/0"] is p and index["humaneval/0"] is p
