from lorafleet.services.evaluator.gate import evaluate_gate, gate_passed
from lorafleet.shared.config import GateSection


def metrics(pass1=0.5, delta=0.1, low=0.02, latency=0.05, errors=0.01):
    return {
        "adapter": {"pass@1": pass1, "error_rate": errors},
        "delta_pass@1": {"mean": delta, "low": low, "high": delta + 0.05},
        "latency_increase": latency,
    }


def by_name(criteria):
    return {c.name: c for c in criteria}


def test_defaults_are_the_specs_thresholds():
    g = GateSection()
    assert (g.min_pass_at_1, g.min_delta_pass_at_1, g.max_latency_increase, g.max_error_rate) == (0.35, 0.05, 0.10, 0.05)
    crit = evaluate_gate(metrics(), g)
    assert [c.name for c in crit] == ["pass@1", "delta_pass@1", "latency_increase", "error_rate"]
    assert gate_passed(crit)
    c = by_name(crit)["latency_increase"]
    assert (c.measured, c.threshold, c.comparison, c.passed) == (0.05, 0.10, "<", True)


def test_each_criterion_can_fail_alone():
    g = GateSection()
    for kwargs, name in [({"pass1": 0.3}, "pass@1"), ({"delta": 0.04}, "delta_pass@1"),
                         ({"latency": 0.2}, "latency_increase"), ({"errors": 0.06}, "error_rate")]:
        crit = by_name(evaluate_gate(metrics(**kwargs), g))
        assert not crit[name].passed
        assert all(c.passed for n, c in crit.items() if n != name)


def test_boundaries():
    g = GateSection()
    crit = by_name(evaluate_gate(metrics(pass1=0.35, delta=0.05, latency=0.10, errors=0.05), g))
    assert crit["pass@1"].passed and crit["delta_pass@1"].passed  # >= at equality
    assert not crit["latency_increase"].passed and not crit["error_rate"].passed  # strict <


def test_unmeasured_values_fail():
    crit = evaluate_gate({"adapter": {"pass@1": 0.9}, "delta_pass@1": {"mean": 0.5}}, GateSection())
    c = by_name(crit)
    assert c["latency_increase"].measured is None and not c["latency_increase"].passed
    assert not gate_passed(crit)
    assert not gate_passed([])


def test_optional_significance_criterion():
    g = GateSection(require_significant_delta=True)
    assert not by_name(evaluate_gate(metrics(low=-0.01), g))["delta_pass@1_ci_low"].passed
    assert gate_passed(evaluate_gate(metrics(low=0.01), g))
