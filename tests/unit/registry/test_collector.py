from datetime import datetime, timedelta, timezone

import pytest

from lorafleet.services.registry.collector import RetrainState, pool_key, retrain_decision, retrain_event, select
from lorafleet.services.registry.settings import RegistrySettings
from lorafleet.shared.events import ProductionOutcome

S = RegistrySettings(retrain_pool_threshold=100, retrain_schedule="0 0 1 * *", retrain_min_new=10)
UTC = timezone.utc


def outcome(**kw) -> ProductionOutcome:
    base = dict(request_id="r", adapter_name="py", version=1, request_key="k", success=True, confidence=0.95,
                latency_ms=3, problem="Sum two ints.", solution="print(sum(map(int, input().split())))")
    return ProductionOutcome(**{**base, **kw})


def test_select_keeps_confident_successes_only():
    problem, why = select(outcome(tests=[{"kind": "stdio", "input": "1 2", "output": "3"}]), S)
    assert why == "ok" and problem.source == "production" and problem.tests[0].output == "3"
    assert problem.solutions == ["print(sum(map(int, input().split())))"]
    assert select(outcome(success=False), S)[0] is None
    assert "0.9" in select(outcome(confidence=0.9), S)[1]  # strictly above the threshold
    assert select(outcome(solution=None), S)[0] is None
    assert "not valid" in select(outcome(tests=[{"kind": "nope"}]), S)[1]
    assert "require_tests" in select(outcome(), RegistrySettings(require_tests=True))[1]


def test_confidence_out_of_range_is_rejected_by_the_contract():
    with pytest.raises(ValueError):
        outcome(confidence=1.2)


def test_pool_key_ignores_whitespace_but_not_code():
    a = pool_key("py", "Sum  two\nints.", "x = 1\n\nprint(x)  \n")
    assert a == pool_key("py", "Sum two ints.", "x = 1\nprint(x)")
    assert a != pool_key("py", "Sum two ints.", "x = 2\nprint(x)")
    assert a.startswith("pool.py.") and a.count(".") == 3


def state(anchor: datetime, **kw) -> RetrainState:
    return RetrainState(adapter_name="py", schedule_anchor=anchor, **kw)


def test_schedule_fires_once_per_period_with_enough_new_entries():
    anchor = datetime(2026, 10, 15, tzinfo=UTC)
    before = retrain_decision(state(anchor), datetime(2026, 10, 31, tzinfo=UTC), 50, S)
    assert before.period is None and before.anchor is None
    due = retrain_decision(state(anchor), datetime(2026, 11, 3, tzinfo=UTC), 50, S)
    assert due.period == "schedule:2026-11-01T00:00:00+00:00" and due.anchor == datetime(2026, 11, 1, tzinfo=UTC)
    after = retrain_decision(state(due.anchor), datetime(2026, 11, 20, tzinfo=UTC), 50, S)
    assert after.period is None  # same period: nothing more
    missed = retrain_decision(state(anchor), datetime(2027, 2, 10, tzinfo=UTC), 50, S)
    assert missed.period == "schedule:2027-02-01T00:00:00+00:00"  # missed months collapse into one run


def test_schedule_skips_when_pool_too_small_and_pool_size_triggers_between_ticks():
    anchor = datetime(2026, 10, 15, tzinfo=UTC)
    skip = retrain_decision(state(anchor), datetime(2026, 11, 2, tzinfo=UTC), 3, S)
    assert skip.period is None and skip.anchor is not None and "skipped" in skip.reason
    size = retrain_decision(state(anchor, last_pool_seq=41), datetime(2026, 10, 20, tzinfo=UTC), 100, S)
    assert size.period == "pool:41" and size.kind == "pool_size"
    assert retrain_decision(state(anchor), datetime(2026, 10, 20, tzinfo=UTC), 99, S).period is None


def test_retrain_event_id_is_derived_from_the_period():
    a = retrain_event("py", "pool:41", {"x": 1}, "abc", "obj://b/pool.jsonl")
    b = retrain_event("py", "pool:41", {"x": 1}, "abc", "obj://b/pool.jsonl")
    c = retrain_event("py", "pool:90", {"x": 1}, "abc", "obj://b/pool.jsonl")
    assert a.event_id == b.event_id != c.event_id
    assert a.reason == "retrain" and a.extra_sources[0].type == "production"
    assert a.occurred_at - timedelta(seconds=5) < datetime.now(UTC)


def test_an_open_ab_test_defers_a_due_retrain_without_moving_the_schedule():
    anchor = datetime(2026, 10, 15, tzinfo=UTC)
    pool = retrain_decision(state(anchor), datetime(2026, 10, 20, tzinfo=UTC), 100, S, ab_candidate=2)
    assert pool.period is None and pool.anchor is None and "v2" in pool.reason
    tick = retrain_decision(state(anchor), datetime(2026, 11, 3, tzinfo=UTC), 50, S, ab_candidate=2)
    assert tick.period is None and tick.anchor is None  # the missed tick fires once the test is decided
    assert retrain_decision(state(anchor), datetime(2026, 11, 3, tzinfo=UTC), 50, S).period is not None
    allowed = S.model_copy(update={"retrain_during_ab": True})
    assert retrain_decision(state(anchor), datetime(2026, 10, 20, tzinfo=UTC), 100, allowed, ab_candidate=2).period == "pool:0"
