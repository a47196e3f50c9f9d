"""The whole pipeline on the fixture sources, with the real sandbox (no NATS)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorafleet.services.ingest.core import TooFewExamples, build
from lorafleet.services.ingest.pipeline import build_dataset
from lorafleet.services.ingest.verify import sandbox_judge, select_tests, verify_problems
from lorafleet.shared.config import DataSection, SourceSection
from lorafleet.shared.errors import ConfigError, LorafleetError
from lorafleet.shared.problems import Limits, Problem, TrainExample
from lorafleet.shared.problems import TestCase as Case

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "ingest"
ALL_DOMAINS = ["python", "math", "algorithms", "data_structures"]


def all_sources() -> list[SourceSection]:
    f = FIXTURES
    return [
        SourceSection(type="codecontests", path=str(f / "codecontests.parquet")),
        SourceSection(type="apps", path=str(f / "apps.jsonl")),
        SourceSection(type="taco", path=str(f / "taco")),
        SourceSection(type="livecodebench", path=str(f / "livecodebench.jsonl"), role="validation"),
        SourceSection(type="humaneval", path=str(f / "humaneval.jsonl.gz"), role="validation"),
        SourceSection(type="lorafleet", path=str(f / "lorafleet.jsonl")),
        SourceSection(type="production", path=str(f / "production.jsonl")),
    ]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "dataset"
    data = DataSection(sources=all_sources(), domains=ALL_DOMAINS, min_examples=1, eval_fraction=0.3,
                       max_solutions_per_problem=4)
    report = build_dataset(data, judge=sandbox_judge(), out_dir=out)
    return report, out


def test_counts(built):
    report, _ = built
    assert report["problems"] == 18  # well-formed rows of every source; malformed ones are not counted here
    assert report["malformed"] == {
        "bad_json": 1, "bad_json:input_output": 1, "bad_json:solutions": 1, "bad_private_tests": 2,
        "bad_problem": 1, "file_io": 1, "no_tests": 4, "non_utf8": 1}
    assert report["skipped"] == {"python2": 2}
    # CC 3+1+1, APPS 2+2+1+1, TACO 2+1, lorafleet 2, production 1 Python 3 candidates
    assert report["solutions"] == 18
    assert report["rejected"] == {"time_limit": 1, "wrong_answer": 3}
    assert report["verified"] == 14
    assert report["decontaminated"] == 1  # APPS 12 is LiveCodeBench abc300_a
    # sum: CC+APPS+TACO, stack: CC+TACO, max: APPS+own, primes: CC+own
    assert report["duplicate_problems"] == 5
    assert report["validation_cutoff"] == "2022-05-01"  # latest training date (TACO), none configured
    assert report["validation_before_cutoff"] == 1 and report["validation_problems"] == 5
    assert report["train_problems"] + report["eval_problems"] == 6
    assert sum(report["by_source"].values()) == 6


def test_artifact(built):
    report, out = built
    assert sorted(p.name for p in out.iterdir()) == ["eval.jsonl", "eval_problems.jsonl", "manifest.json", "train.jsonl"]
    train = [TrainExample.model_validate(r) for r in read_jsonl(out / "train.jsonl")]
    evals = [TrainExample.model_validate(r) for r in read_jsonl(out / "eval.jsonl")]
    problems = [Problem.model_validate(r) for r in read_jsonl(out / "eval_problems.jsonl")]
    assert len(train) == report["train"] and len(evals) == report["eval"]
    # split by problem: no problem on both sides
    assert not {e.problem_id for e in train} & {e.problem_id for e in evals}
    roles = {p.id: p.meta["role"] for p in problems}
    assert {pid for pid, r in roles.items() if r == "eval_split"} == {e.problem_id for e in evals}
    assert {pid for pid, r in roles.items() if r == "validation"} == {
        "livecodebench/abc300_a", "livecodebench/abc301_b", "livecodebench/3000", "humaneval/0", "humaneval/1"}
    assert all(p.tests for p in problems)
    by_problem: dict[str, list[str]] = {}
    for e in train + evals:
        by_problem.setdefault(e.problem_id, []).append(e.code)
        assert e.domains and e.meta["adapters"]
    assert all(len(v) <= 4 for v in by_problem.values())
    # the merged sum problem: the wrong and the duplicate (comment-only) solutions are gone
    sums = by_problem["codecontests/1000_A. Sum"]
    assert len(sums) == 2 and not any("a - b" in c for c in sums)
    assert "apps/12" not in by_problem and "apps/10" not in by_problem
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stats"]["verified"] == report["verified"] and manifest["config"]["eval_fraction"] == 0.3
    assert all(len(i["sha256"]) == 64 for i in manifest["inputs"])


def test_too_few_examples_leaves_nothing(tmp_path):
    out = tmp_path / "ds"
    data = DataSection(sources=[SourceSection(type="humaneval", path=str(FIXTURES / "humaneval.jsonl.gz"))],
                       domains=ALL_DOMAINS, min_examples=100, verify={"enabled": False})
    with pytest.raises(TooFewExamples, match=r"only 1 training examples .*min_examples=100"):
        build_dataset(data, judge=None, out_dir=out)
    assert list(tmp_path.iterdir()) == []


def test_missing_file_leaves_nothing(tmp_path):
    data = DataSection(sources=[SourceSection(type="apps", path=str(tmp_path / "missing.jsonl"))], min_examples=0)
    with pytest.raises(LorafleetError, match="missing.jsonl not found"):
        build(data.sources, data, judge=sandbox_judge(), out_dir=tmp_path / "ds")
    assert list(tmp_path.iterdir()) == []


def test_domains_select(tmp_path):
    data = DataSection(sources=[SourceSection(type="codecontests", path=str(FIXTURES / "codecontests.parquet"))],
                       domains=["data_structures"], min_examples=0, verify={"enabled": False})
    report = build_dataset(data, judge=None, out_dir=None)
    assert report["by_domain"] == {"data_structures": 1} and report["out_of_domain"] == 2


def test_verify_budget_and_duplicates():
    spin = "while True:\n    pass\n"
    p = Problem(id="t/1", source="t", statement="s", tests=[Case(kind="stdio", input="1\n", output="1\n")],
                limits=Limits(time_s=0.3), solutions=[spin, spin + "# again\n", "while 1:\n    pass\n", "print(1)"])
    ok = Problem(id="t/2", source="t", statement="s", tests=[Case(kind="stdio", input="", output="2\n")],
                 solutions=["print(2)", "print( 2 )  # same", "print(3)"])
    judge = sandbox_judge()
    [v1] = verify_problems([p], judge, max_tests=5, budget_s=0.1)
    # round 1 ran the spinner (and its comment-only copy with it) and used up the budget
    assert v1.verdicts == {"time_limit": 2, "budget_exhausted": 2} and v1.duplicates == 1
    [v2] = verify_problems([ok], judge, max_tests=5, budget_s=30)
    assert v2.verdicts == {"passed": 2, "wrong_answer": 1} and v2.problem.solutions == ["print(2)"]


def test_select_tests_keeps_source_tests_first_and_is_deterministic():
    tests = [Case(kind="stdio", input=f"{i}\n", output="") for i in range(50)]
    p = Problem(id="x/1", source="x", statement="s", tests=tests, meta={"tests_first": 3})
    picked = select_tests(p, 10)
    assert len(picked) == 10 and picked[:3] == tests[:3] and picked == select_tests(p, 10)
    assert select_tests(p.model_copy(update={"id": "x/2"}), 10) != picked


def test_train_file_pair(tmp_path):
    own = (FIXTURES / "lorafleet.jsonl").read_text().splitlines()[:2]  # two Problem lines
    example = TrainExample(id="e/1#0", problem_id="e/1", source="x", statement="s", code="print(1)")
    broken = TrainExample(id="e/2#0", problem_id="e/2", source="x", statement="s", code="def (:")
    (tmp_path / "train.jsonl").write_text("\n".join([own[0], example.model_dump_json(), broken.model_dump_json()]) + "\n")
    (tmp_path / "eval.jsonl").write_text(own[1] + "\n")
    data = DataSection(train_file=str(tmp_path / "train.jsonl"), eval_file=str(tmp_path / "eval.jsonl"), min_examples=1)
    report = build_dataset(data, judge=sandbox_judge(), out_dir=tmp_path / "ds")
    assert report["train"] == 2 and report["eval"] == 1 and report["verified"] == 2
    assert report["rejected"] == {"syntax_error": 1}
    assert [Problem.model_validate(r).id for r in read_jsonl(tmp_path / "ds" / "eval_problems.jsonl")] == ["lorafleet/prime"]
    (tmp_path / "eval.jsonl").write_text(example.model_dump_json() + "\n")
    with pytest.raises(ConfigError, match="share 1 problem"):
        build_dataset(data, judge=sandbox_judge(), out_dir=tmp_path / "ds2")
    assert not (tmp_path / "ds2").exists()


def test_train_file_pair_missing_falls_back_to_sources(tmp_path):
    data = DataSection(train_file=str(tmp_path / "t.jsonl"), eval_file=str(tmp_path / "e.jsonl"), min_examples=1,
                       sources=[SourceSection(type="humaneval", path=str(FIXTURES / "humaneval.jsonl.gz"))],
                       validation_cutoff="2024-01-01", verify={"enabled": False})
    report = build_dataset(data, judge=None, out_dir=None)
    assert report["problems"] == 2 and report["train"] == 1 and report["validation_cutoff"] == "2024-01-01"
    only_files = DataSection(train_file=str(tmp_path / "t.jsonl"), eval_file=str(tmp_path / "e.jsonl"))
    with pytest.raises(ConfigError, match="data.train_file: .* not found"):
        build_dataset(only_files, judge=None, out_dir=None)


def test_same_source_twice_counts_duplicate_ids():
    he = SourceSection(type="humaneval", path=str(FIXTURES / "humaneval.jsonl.gz"))
    data = DataSection(sources=[he, he], min_examples=0, domains=[], verify={"enabled": False})
    report = build_dataset(data, judge=None, out_dir=None)
    assert report["problems"] == 2 and report["malformed"] == {"duplicate_id": 2}


def test_tight_source_limits_still_judge():
    # a 16 MB, 0-second limit as old judges state them must not break (or starve) the sandbox
    p = Problem(id="t/3", source="t", statement="s", tests=[Case(kind="stdio", input="", output="ok\n")],
                limits=Limits(time_s=0.01, memory_mb=16), solutions=["print('ok')"])
    [v] = verify_problems([p], sandbox_judge(), max_tests=5, budget_s=30)
    assert v.verdicts == {"passed": 1}
