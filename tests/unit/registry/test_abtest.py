"""The sequential A/B decision, one look at a time (the Monte Carlo figures are in test_abtest_sim.py).

The old fixed-level z-test's expectations (a textbook z of 3.178 deciding at one look, "z ~ 1.7 promotes at
alpha 0.05") were replaced: they described the peeking rule that issue 16 removed."""

import math

import pytest

from lorafleet.services.registry import abtest
from lorafleet.services.registry.abtest import Running, evaluate, half_width, log_lr, rate_difference, srm_log_bf


def test_clear_winner_promotes_and_loser_rolls_back():
    win = evaluate(160, 200, 120, 200)
    assert win.decision == "promote" and win.low > 0 and win.p_better <= 0.05
    lose = evaluate(120, 200, 160, 200)
    assert lose.decision == "rollback" and lose.high < 0 and lose.p_worse <= 0.05


def test_no_decision_below_min_samples_or_without_difference():
    assert evaluate(99, 99, 0, 99).decision == "continue"  # production default: 100 per arm first
    assert evaluate(100, 200, 100, 200).decision == "continue"
    assert evaluate(200, 200, 200, 200).decision == "continue"  # both all-success: no evidence either way


def test_a_difference_that_a_single_z_test_calls_is_not_enough():
    # z ~ 1.7 at 1000 per arm: the old one-sided test promoted (p ~ 0.045); a test that may look again can't
    r = evaluate(585, 1000, 548, 1000)
    assert r.z == pytest.approx(1.67, abs=0.02)
    assert r.decision == "continue" and r.low < 0 < r.high and r.p_value > 0.05


def test_interval_and_p_value_are_the_closed_form_and_agree():
    s1, n1, s2, n2, tau, alpha = 300, 500, 250, 500, 0.05, 0.05
    diff, var = rate_difference(s1, n1, s2, n2)
    r1, r2 = (s1 + 1) / (n1 + 2), (s2 + 1) / (n2 + 2)
    assert diff == pytest.approx(0.1) and var == pytest.approx(r1 * (1 - r1) / n1 + r2 * (1 - r2) / n2)
    t2 = tau * tau
    by_hand = math.sqrt(var * (var + t2) / t2 * (2 * math.log(1 / alpha) + math.log((var + t2) / var)))
    assert half_width(var, tau, alpha) == pytest.approx(by_hand)
    r = evaluate(s1, n1, s2, n2)
    assert (r.low, r.high) == pytest.approx((diff - by_hand, diff + by_hand))
    # duality: the interval's edge is where the mixture likelihood ratio reaches 1/alpha
    assert log_lr(by_hand, var, tau) == pytest.approx(math.log(1 / alpha))
    assert r.p_value == pytest.approx(math.exp(-log_lr(diff, var, tau)))
    assert (r.p_value < alpha) == (r.low > 0)


def test_running_values_only_tighten():
    first = evaluate(345, 600, 300, 600)
    alone = evaluate(346, 620, 320, 620)  # the evidence weakened
    later = evaluate(346, 620, 320, 620, previous=first.running)
    assert 0.05 < first.p_value < alone.p_value
    assert later.p_value == first.p_value and later.p_better == first.p_better  # running minimum
    assert later.low == first.low > alone.low and later.high == alone.high < first.high  # intersection


def test_min_effect_and_inconclusive():
    assert evaluate(700, 1000, 500, 1000).decision == "promote"
    assert evaluate(700, 1000, 500, 1000, min_effect=0.15).decision == "continue"
    assert evaluate(500, 1000, 500, 1000, max_samples=1000).decision == "inconclusive"


def test_error_guardrail_rolls_back_a_winner_that_fails_more():
    r = evaluate(700, 1000, 500, 1000, candidate_errors=80, control_errors=20)
    errors = r.guardrails[0]
    assert r.decision == "rollback" and errors.name == "errors" and errors.tripped and errors.low > 0
    assert "guardrail" in r.reason
    assert evaluate(700, 1000, 500, 1000, candidate_errors=22, control_errors=20).decision == "promote"


def moments(n: int, mean: float, sd: float) -> tuple[float, float]:
    return n * mean, n * (sd * sd + mean * mean)  # sum, sum of squares with sample variance ~ sd²


def test_latency_guardrail_uses_the_ratio_limit():
    slow = evaluate(520, 1000, 500, 1000, candidate_latency=moments(1000, 150, 30), control_latency=moments(1000, 100, 20))
    lat = slow.guardrails[1]
    assert slow.decision == "rollback" and lat.name == "latency" and lat.estimate == pytest.approx(1.5)
    assert lat.low > 1.2 and lat.tripped
    ok = evaluate(700, 1000, 500, 1000, candidate_latency=moments(1000, 110, 30), control_latency=moments(1000, 100, 20))
    assert ok.decision == "promote" and not ok.guardrails[1].tripped  # slower, but within 1.2x
    off = evaluate(520, 1000, 500, 1000, candidate_latency=moments(1000, 150, 30),
                   control_latency=moments(1000, 100, 20), max_latency_ratio=None)
    assert [g.name for g in off.guardrails] == ["errors"] and off.decision == "continue"


def test_srm_bayes_factor_is_a_martingale_under_the_configured_split():
    # E[BF(next) | now] = BF(now) when the next outcome lands on each arm with the configured share
    for counts, share in (((3, 9), 0.2), ((40, 35), 0.5), ((0, 0), 0.1)):
        now = math.exp(srm_log_bf(counts, (share, 1 - share)))
        nxt = (share * math.exp(srm_log_bf((counts[0] + 1, counts[1]), (share, 1 - share)))
               + (1 - share) * math.exp(srm_log_bf((counts[0], counts[1] + 1), (share, 1 - share))))
        assert nxt == pytest.approx(now)
    assert srm_log_bf((1, 5), (0.0, 1.0)) == math.inf  # a candidate outcome at 0% traffic


def test_sample_ratio_mismatch_stops_any_decision():
    r = evaluate(800, 1000, 300, 1000, traffic=0.1)  # a huge win, but half the outcomes at a 10% share
    assert r.decision == "inconclusive" and r.srm.detected and "sample-ratio mismatch" in r.reason
    assert r.srm.observed == pytest.approx(0.5) and r.srm.p_value <= abtest.SRM_ALPHA
    early = evaluate(50, 60, 10, 60, traffic=0.1)  # before min_samples too
    assert early.decision == "inconclusive" and early.srm.detected
    fine = evaluate(85, 100, 270, 900, traffic=0.1)
    assert not fine.srm.detected and fine.decision == "promote"
    # a changed share: only the segment since the change is tested against the new share
    seg = evaluate(85, 100, 270, 900, traffic=0.5, split_counts=(50, 50))
    assert not seg.srm.detected


def test_missing_candidate_outcomes_count_as_failures_for_promotion():
    # 50% share, control 1000 outcomes, candidate only 800 reported with a 0.6 rate: 1000 expected
    naive = evaluate(480, 800, 500, 1000, split_robust=False)
    assert naive.decision == "promote"
    robust = evaluate(480, 800, 500, 1000, traffic=0.5, srm_alpha=1e-12)  # SRM test kept out of the way
    assert robust.decision == "continue" and robust.promotion_low < 0 < robust.low
    # and it never turns a rollback into anything else
    assert evaluate(300, 800, 600, 1000, traffic=0.5, srm_alpha=1e-12).decision == "rollback"


@pytest.mark.parametrize("args, arm", [((5, 4, 1, 4), "candidate"), ((1, 4, -1, 4), "control"),
                                       ((1, -1, 1, 4), "candidate")])
def test_bad_counts_raise_naming_the_arm(args, arm):
    with pytest.raises(ValueError, match=f"{arm} arm has"):
        evaluate(*args)
    with pytest.raises(ValueError, match="control arm has 9 errors"):
        evaluate(1, 4, 1, 4, control_errors=9)


def test_defaults_are_the_production_settings():
    from lorafleet.services.registry.settings import RegistrySettings

    s = RegistrySettings()
    assert (s.ab_alpha, s.ab_tau, s.ab_min_samples, s.ab_guardrail_alpha, s.ab_srm_alpha) == (
        abtest.ALPHA, abtest.TAU, abtest.MIN_SAMPLES, abtest.GUARDRAIL_ALPHA, abtest.SRM_ALPHA)
    assert Running().p_value == 1.0


def test_promotion_waits_while_a_guardrail_leans_towards_harm():
    # latency ratio 1.25 over a 1.2 limit: not yet significant (no rollback), but promotion is held
    r = evaluate(700, 1000, 500, 1000, candidate_latency=moments(1000, 125, 50), control_latency=moments(1000, 100, 40))
    lat = r.guardrails[1]
    assert lat.holding and not lat.tripped and lat.low < 1.2 < lat.estimate
    assert r.decision == "continue" and "promotion waits" in r.reason and r.p_better <= 0.05
