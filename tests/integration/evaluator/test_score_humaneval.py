"""`lorafleet eval score` on real HumanEval problems: canonical solutions mixed with
wrong ones in known counts, judged by the real sandbox; pass@k must equal the
closed form on those counts."""

import json
import subprocess
import sys
from math import comb
from pathlib import Path

import pytest

from lorafleet.services.evaluator.problems_io import load_problems

N = 5
WRONG = [
    "    raise ValueError('not solved')\n",   # runtime_error
    "    return (\n",                          # syntax_error
    "    return None\n",                       # wrong_answer
]


def lorafleet(*args, cwd=None):
    exe = Path(sys.executable).parent / "lorafleet"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.fixture(scope="module")
def humaneval():
    from lorafleet.services.ingest.sources.humaneval import default_path

    return Path(default_path())


def test_score_matches_the_closed_form(humaneval, tmp_path):
    problems = load_problems(humaneval, "humaneval")[:8]
    counts = {}
    lines = []
    for i, p in enumerate(problems):
        body = p.solutions[0][len(p.starter_code):]
        c = i % (N + 1)
        counts[p.meta["task_id"]] = c
        for j in range(N):
            completion = body if j < c else WRONG[j % len(WRONG)]
            lines.append({"problem_id": p.meta["task_id"], "completion": completion})
    lines.append({"problem_id": problems[0].meta["task_id"], "completion": "```python\nprint(\n```"})  # 6th sample, fenced
    counts_n = {pid: N for pid in counts} | {problems[0].meta["task_id"]: N + 1}
    samples = tmp_path / "samples.jsonl"
    samples.write_text("\n".join(json.dumps(x) for x in lines) + "\n")

    res = lorafleet("eval", "score", "--problems", str(humaneval), "--samples", str(samples), "--k", "1,5", "--json",
                    "--report", str(tmp_path / "report"))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])

    def closed(k):
        return sum(1 - comb(counts_n[p] - c, k) / comb(counts_n[p], k) for p, c in counts.items()) / len(counts)

    assert out["problems"] == 8 and out["samples"] == 8 * N + 1
    assert out["pass@1"] == pytest.approx(closed(1))
    assert out["pass@5"] == pytest.approx(closed(5))
    assert out["verdicts"]["passed"] == sum(counts.values())
    wrong_idx = [j % len(WRONG) for i in range(8) for j in range(N) if j >= i % (N + 1)]
    assert out["verdicts"]["runtime_error"] == wrong_idx.count(0)
    assert out["verdicts"]["syntax_error"] == wrong_idx.count(1) + 1
    assert out["verdicts"]["wrong_answer"] == wrong_idx.count(2)
    assert out["error_rate"] == pytest.approx((wrong_idx.count(0) + wrong_idx.count(1) + 1) / (8 * N + 1))
    assert (tmp_path / "report" / "report.html").is_file()


def test_bad_input_is_one_clear_line(humaneval, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem_id": "HumanEval/0"}\n')
    res = lorafleet("eval", "score", "--problems", str(humaneval), "--samples", str(bad), "--json")
    assert res.returncode == 2
    assert "completion" in res.stderr and "Traceback" not in res.stderr
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text('{"problem_id": "Nope/1", "completion": "x"}\n')
    res = lorafleet("eval", "score", "--problems", str(humaneval), "--samples", str(unknown))
    assert res.returncode == 2 and "Nope/1" in res.stderr
