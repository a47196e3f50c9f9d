"""A real evaluation of a tiny model with and without a LoRA adapter on CPU:
transformers backend, the trainer's prompt rendering, the real sandbox."""

import json
import subprocess
import sys
from pathlib import Path

from lorafleet.services.evaluator.backends.transformers import TransformersBackend
from lorafleet.services.evaluator.evaluate import run_evaluation
from lorafleet.services.evaluator.judging import make_judge
from lorafleet.services.evaluator.models import SamplingParams


async def test_base_and_adapter_differ_with_the_same_seeds(tiny_pair, heldout_problems):
    base, adapter = tiny_pair
    _, problems = heldout_problems
    backend = TransformersBackend(base, adapter, batch_size=4)
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=16, seed=3)
    first = await run_evaluation(problems[:2], backend, params, make_judge(), greedy=True, chunk_size=2)
    again = await run_evaluation(problems[:2], backend, params, make_judge(), greedy=False, chunk_size=2)

    def texts(result, variant):
        return {(r.problem_id, s.index): s.completion for r in result.problems if r.variant == variant for s in r.samples}

    base1, adapter1 = texts(first, "base"), texts(first, "adapter")
    assert len(base1) == 2 * 3 and len(adapter1) == 2 * 3  # 2 problems x (2 sampled + 1 greedy)
    assert base1 != adapter1  # the LoRA changes the outputs
    sampled = {k: v for k, v in base1.items() if k[1] >= 0}
    assert texts(again, "base") == sampled  # same seeds -> the same samples, run after run
    assert all(r.n == 2 for r in first.problems)
    assert {x.variant for x in first.latency} == {"base", "adapter"}
    assert all(x.ttft_s > 0 and x.tpot_s > 0 and x.output_tokens > 0 for x in first.latency)

    # temperature 0 with n > 1: n copies of the one greedy answer (as vLLM does), not an error
    req = [first_request(problems[0])]
    g1 = (await backend.generate(req, "adapter", SamplingParams(n=3, temperature=0.0, max_new_tokens=8)))[0]
    g2 = (await backend.generate(req, "adapter", SamplingParams(n=1, temperature=0.0, max_new_tokens=8)))[0]
    assert len(set(g1.texts)) == 1 and len(g1.texts) == 3 and g1.texts[0] == g2.texts[0]
    await backend.aclose()


def first_request(problem):
    from lorafleet.services.evaluator.evaluate import build_request

    return build_request(problem, 0)


def test_eval_run_cli_writes_report(tiny_pair, heldout_problems, tmp_path):
    base, adapter = tiny_pair
    path, problems = heldout_problems
    out = tmp_path / "report"
    exe = Path(sys.executable).parent / "lorafleet"
    res = subprocess.run([str(exe), "eval", "run", "--adapter", str(adapter), "--base", str(base), "--problems", str(path),
                          "--n", "2", "--k", "1,2", "--max-new-tokens", "12", "--out", str(out)],
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    assert "gate" in res.stdout and "Δpass@1" in res.stdout
    report = json.loads((out / "report.json").read_text())
    m = report["metrics"]
    assert m["problems"] == len(problems)
    for variant in ("base", "adapter"):
        assert m[variant]["samples"] == 2 * len(problems)
        assert m[variant]["pass@1"] is not None and m[variant]["pass@2"] is not None
        assert m[variant]["latency"]["requests"] == len(problems)
    assert [c["name"] for c in report["gate"]["criteria"]] == ["pass@1", "delta_pass@1", "latency_increase", "error_rate"]
    assert all(set(c) >= {"measured", "threshold", "passed"} for c in report["gate"]["criteria"])
    assert {(p["problem_id"], p["variant"]) for p in report["problems"]} == {(p.id, v) for p in problems for v in ("base", "adapter")}
    assert (out / "pass_at_k.png").is_file() and (out / "report.html").is_file()
