import json

import pytest

from lorafleet.services.evaluator.gate import evaluate_gate
from lorafleet.services.evaluator.metrics import latency_increase, summarize
from lorafleet.services.evaluator.models import LatencyRecord, ProblemResult, SampleResult
from lorafleet.services.evaluator.report import build_report, write_report
from lorafleet.shared.config import GateSection


def result(pid, variant, verdicts, greedy=None, difficulty="easy", source="lorafleet"):
    samples = [SampleResult(index=i, verdict=v, error=v if v in ("no_code", "syntax_error", "runtime_error") else None)
               for i, v in enumerate(verdicts)]
    if greedy is not None:
        samples.append(SampleResult(index=-1, verdict="passed" if greedy else "wrong_answer"))
    return ProblemResult(problem_id=pid, source=source, difficulty=difficulty, variant=variant, n=len(verdicts),
                         correct=verdicts.count("passed"), greedy_passed=greedy, samples=samples)


def fixture_results():
    return [
        result("p1", "base", ["wrong_answer"] * 4, greedy=False),
        result("p1", "adapter", ["passed", "passed", "wrong_answer", "no_code"], greedy=True),
        result("p2", "base", ["passed", "runtime_error", "syntax_error", "time_limit"], greedy=True, difficulty="hard"),
        result("p2", "adapter", ["passed"] * 4, greedy=True, difficulty="hard", source="apps"),
    ]


def test_summary_numbers():
    latency = [LatencyRecord(variant="base", ttft_s=0.1, tpot_s=0.01, output_tokens=10),
               LatencyRecord(variant="adapter", ttft_s=0.1, tpot_s=0.02, output_tokens=30)]
    m = summarize(fixture_results(), latency, [1, 2], resamples=500)
    assert m["problems"] == 2
    assert m["base"]["pass@1"] == pytest.approx((0 + 0.25) / 2)
    assert m["adapter"]["pass@1"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["adapter"]["pass@2"] == pytest.approx((1 - 1 / 6 + 1.0) / 2)  # p1: 1 - C(2,2)/C(4,2)
    assert m["base"]["error_rate"] == pytest.approx(2 / 8)
    assert m["adapter"]["error_rate"] == pytest.approx(1 / 8)
    assert m["base"]["errors"] == {"no_code": 0, "syntax_error": 1, "runtime_error": 1}
    assert m["adapter"]["verdicts"] == {"no_code": 1, "passed": 6, "wrong_answer": 1}
    assert m["base"]["greedy_pass@1"] == 0.5 and m["adapter"]["greedy_pass@1"] == 1.0
    assert m["delta_pass@1"]["mean"] == pytest.approx(0.625)
    assert m["base"]["by_difficulty"]["hard"]["pass@1"] == pytest.approx(0.25)
    # same output length L=10: (0.1 + 0.02*10) / (0.1 + 0.01*10) - 1 = 0.5, not inflated by the adapter's longer answers
    assert m["latency_increase"] == pytest.approx(0.5)
    assert m["tpot_s_increase"] == pytest.approx(1.0)


def test_latency_increase_needs_both():
    assert latency_increase(None, {"ttft_s_mean": 1}) is None
    assert latency_increase({"ttft_s_mean": None}, {"ttft_s_mean": 1}) is None


def test_pass_at_k_is_none_when_a_problem_has_fewer_than_k_samples():
    m = summarize([result("p1", "samples", ["passed"]), result("p2", "samples", ["passed", "wrong_answer"])], [], [1, 2])
    assert m["samples"]["pass@1"] == pytest.approx(0.75)
    assert m["samples"]["pass@2"] is None


def test_mismatched_problem_sets_are_refused():
    rs = fixture_results()[:3]
    with pytest.raises(ValueError, match="different problems"):
        summarize(rs, [], [1])


def test_report_directory(tmp_path):
    rs = fixture_results()
    latency = [LatencyRecord(variant=v, ttft_s=0.1, tpot_s=0.01, output_tokens=10) for v in ("base", "adapter")]
    m = summarize(rs, latency, [1, 2], resamples=200)
    crit = evaluate_gate(m, GateSection())
    out = tmp_path / "report"
    (out).mkdir()
    (out / "stale.txt").write_text("old")
    write_report(out, build_report(m, rs, crit, {"adapter_name": "python-lora"}), rs)
    assert not (out / "stale.txt").exists()  # replaced as a whole
    data = json.loads((out / "report.json").read_text())
    assert data["gate"]["criteria"][0]["name"] == "pass@1"
    assert {p["problem_id"] for p in data["problems"]} == {"p1", "p2"}
    assert set(data["plots"]) == {"pass_at_k.png", "pass_at_1_by_difficulty.png", "pass_at_1_by_source.png", "verdicts.png", "latency.png"}
    for name in data["plots"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text()
    assert "Gate:" in html and "pass_at_k.png" in html and "Δpass@1" in html and "latency_increase" in html
    assert not list(tmp_path.glob(".*partial*")) and not list(tmp_path.glob(".*old"))
