import pytest

from lorafleet.services.registry.abtest import evaluate


def test_clear_winner_promotes_and_loser_rolls_back():
    assert evaluate(160, 200, 120, 200).decision == "promote"
    assert evaluate(120, 200, 160, 200).decision == "rollback"


def test_no_decision_below_min_samples_or_without_difference():
    assert evaluate(199, 199, 0, 199).decision == "continue"
    assert evaluate(100, 200, 100, 200).decision == "continue"
    assert evaluate(200, 200, 200, 200).decision == "continue"  # zero variance


def test_matches_textbook_z_value():
    # p1=0.6, p2=0.5, n=500 each, pooled p=0.55: z = 0.1 / sqrt(.55*.45*2/500) = 3.178
    r = evaluate(300, 500, 250, 500, min_samples=1)
    assert r.z == pytest.approx(3.178, abs=1e-3)
    assert r.p_better == pytest.approx(0.000741, rel=0.01)


def test_alpha_boundary_and_min_effect_and_inconclusive():
    # z ~ 1.7 → p ~ 0.045: promote at 0.05, not at 0.01
    assert evaluate(585, 1000, 548, 1000, alpha=0.05).decision == "promote"
    assert evaluate(585, 1000, 548, 1000, alpha=0.01).decision == "continue"
    assert evaluate(585, 1000, 548, 1000, min_effect=0.05).decision == "continue"
    assert evaluate(500, 1000, 500, 1000, max_samples=1000).decision == "inconclusive"


def test_bad_counts_raise():
    with pytest.raises(ValueError):
        evaluate(5, 4, 1, 4)
