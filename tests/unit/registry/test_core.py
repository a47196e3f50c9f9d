from datetime import timedelta

import pytest

from lorafleet.services.registry import core
from lorafleet.services.registry.core import Outcome, RegistryError
from lorafleet.services.registry.settings import RegistrySettings

from registry_helpers import INFO, NOW, evaluated

# Equal arm counts in these tests: a 50% split, or the sample-ratio check (rightly) stops the test.
S = RegistrySettings(ab_min_samples=50, ab_traffic=0.5)


def registered(*versions: int, settings: RegistrySettings = S):
    state = None
    for v in versions:
        state = core.register(state, evaluated(version=v), INFO, lora_int_id=10 + v, now=NOW, settings=settings).state
    return state


def test_register_starts_ab_against_base_and_emits_events():
    change = core.register(None, evaluated(), INFO, lora_int_id=7, now=NOW, settings=S)
    st = change.state
    assert st.versions[1].status == "ab_testing" and st.versions[1].lora_int_id == 7
    assert st.ab.candidate == 1 and st.ab.control is None and st.ab.traffic == 0.5
    assert [e.event_type for e in change.events] == ["adapter.registered", "adapter.ab_started"]
    assert len(st.outbox) == 2 and st.active is None


def test_register_uses_adapter_config_over_event_and_notes_the_mismatch():
    st = core.register(None, evaluated(rank=8, target_modules=["all"]), INFO, 1, NOW, S).state
    assert st.versions[1].rank == 32 and st.versions[1].target_modules == ["q_proj", "v_proj"]
    assert len(st.versions[1].notes) == 2


def test_gate_failure_is_rejected_with_reasons_and_no_id():
    change = core.register(None, evaluated(passed=False), INFO, None, NOW, S)
    v = change.state.versions[1]
    assert v.status == "rejected" and v.lora_int_id is None
    assert "pass@1 delta" in v.reasons[0] and change.events[0].event_type == "adapter.rejected"


def test_redelivered_registration_is_a_no_op_and_conflicts_are_errors():
    st = registered(1)
    assert core.register(st, evaluated(version=1), INFO, 99, NOW, S).state is None
    with pytest.raises(RegistryError, match="already registered"):
        core.register(st, evaluated(version=1, sha="f" * 64), INFO, 99, NOW, S)
    st = registered(1, 3)
    with pytest.raises(RegistryError, match="monotonic"):
        core.register(st, evaluated(version=2), INFO, 99, NOW, S)


def test_promote_rollback_walks_back_the_chain():
    st = registered(1)
    st = core.promote(st, "python-lora", None, NOW).state
    assert st.active == 1 and st.ab is None and st.versions[1].previous_version is None
    st = core.register(st, evaluated(version=2), INFO, 12, NOW, S).state
    assert st.ab.control == 1
    st = core.promote(st, "python-lora", 2, NOW).state
    st = core.register(st, evaluated(version=3), INFO, 13, NOW, S).state
    st = core.promote(st, "python-lora", 3, NOW).state
    assert [st.versions[v].status for v in (1, 2, 3)] == ["retired", "retired", "active"]
    st = core.rollback(st, "python-lora", NOW).state
    assert st.active == 2 and st.versions[3].status == "retired"
    st = core.rollback(st, "python-lora", NOW).state
    assert st.active == 1
    with pytest.raises(RegistryError, match="no predecessor"):
        core.rollback(st, "python-lora", NOW)
    assert sum(v.status == "active" for v in st.versions.values()) == 1


@pytest.mark.parametrize("version, match", [(9, "no version 9"), (2, "rejected")])
def test_bad_promotions_leave_state_unchanged(version, match):
    st = registered(1)
    st = core.register(st, evaluated(version=2, passed=False), INFO, None, NOW, S).state
    before = st.model_dump()
    with pytest.raises(RegistryError, match=match):
        core.promote(st, "python-lora", version, NOW)
    assert st.model_dump() == before


def test_unknown_adapter_errors():
    with pytest.raises(RegistryError, match="unknown adapter"):
        core.promote(None, "nope", 1, NOW)
    with pytest.raises(RegistryError, match="unknown adapter"):
        core.rollback(None, "nope", NOW)
    with pytest.raises(RegistryError, match="no active version"):
        core.rollback(registered(1), "python-lora", NOW)
    with pytest.raises(RegistryError, match="invalid"):
        core.check_name("bad name!")


def outcomes(start_seq, version, n, successes):
    return [Outcome(seq=start_seq + i, version=version, success=i < successes, latency_ms=10.0) for i in range(n)]


def test_outcomes_counted_once_per_sequence_and_unknowns_dead():
    st = registered(1)
    batch = outcomes(1, 1, 10, 5) + [Outcome(seq=11, version=4, success=True, latency_ms=1.0)]
    ch = core.apply_outcomes(st, "python-lora", batch, S, NOW)
    assert ch.state.versions[1].metrics.requests == 10 and ch.state.outcome_seq == 11
    assert ch.dead == [(11, "python-lora has no version 4 (0 = base model)")]
    again = core.apply_outcomes(ch.state, "python-lora", batch, S, NOW)
    assert again.state is None  # a replay of applied sequences changes nothing
    assert core.apply_outcomes(None, "ghost", batch[:2], S, NOW).dead[0][1].startswith("unknown adapter")


def test_ab_promotes_better_candidate_against_base():
    st = registered(1)
    ch = core.apply_outcomes(st, "python-lora", outcomes(1, 1, 100, 80) + outcomes(101, 0, 100, 40), S, NOW)
    assert ch.state.active == 1 and ch.state.ab is None
    assert [e.event_type for e in ch.events] == ["adapter.promoted"]
    assert ch.events[0].statistics["p_better"] < 0.05


def test_ab_retires_worse_candidate_and_keeps_active():
    st = core.promote(registered(1), "python-lora", 1, NOW).state
    st = core.register(st, evaluated(version=2), INFO, 12, NOW + timedelta(days=1), S).state
    # outcomes before the A/B started don't count towards it: only the baseline delta does
    ch = core.apply_outcomes(st, "python-lora", outcomes(1, 2, 100, 30) + outcomes(101, 1, 100, 70), S, NOW)
    assert ch.state.active == 1 and ch.state.versions[2].status == "retired" and ch.state.ab is None
    assert ch.events[0].event_type == "adapter.rolled_back" and ch.events[0].to_version == 1


def test_ab_waits_for_min_samples():
    st = registered(1)
    ch = core.apply_outcomes(st, "python-lora", outcomes(1, 1, 40, 40) + outcomes(41, 0, 40, 0), S, NOW)
    assert ch.state.ab is not None and not ch.events


def test_ab_traffic_and_stop():
    st = registered(1)
    st = core.start_ab(st, "python-lora", None, 0.3, NOW).state
    assert st.ab.traffic == 0.3
    with pytest.raises(RegistryError, match="out of range"):
        core.start_ab(st, "python-lora", None, 1.5, NOW)
    st = core.stop_ab(st, "python-lora", NOW).state
    assert st.ab is None and st.versions[1].status == "candidate"


def test_event_ids_are_deterministic_per_transition():
    st = registered(1)
    a = core.promote(st, "python-lora", 1, NOW).events[0]
    b = core.promote(st, "python-lora", 1, NOW).events[0]
    assert a.event_id == b.event_id


def test_changing_the_control_under_a_running_ab_test_restarts_its_counts():
    st = core.promote(registered(1), "python-lora", 1, NOW).state
    st = core.register(st, evaluated(version=2), INFO, 12, NOW, S).state
    st = core.promote(st, "python-lora", 2, NOW).state
    st = core.register(st, evaluated(version=3), INFO, 13, NOW, S).state
    st = core.apply_outcomes(st, "python-lora", outcomes(1, 3, 30, 30) + outcomes(31, 2, 30, 0), S, NOW).state
    st = core.rollback(st, "python-lora", NOW).state  # v2 → v1 while v3 is being tested
    assert st.active == 1 and st.ab.candidate == 3 and st.ab.control == 1
    assert st.ab.candidate_baseline.requests == 30  # earlier outcomes don't count against the new control
    ch = core.apply_outcomes(st, "python-lora", outcomes(61, 3, 30, 30) + outcomes(91, 1, 30, 0), S, NOW)
    assert ch.state.ab is not None and not ch.events  # 30 per arm since the change: below min_samples=50


def test_inconclusive_test_ends_and_candidate_stays():
    s = RegistrySettings(ab_min_samples=20, ab_max_samples=40, ab_traffic=0.5)
    st = registered(1, settings=s)
    ch = core.apply_outcomes(st, "python-lora", outcomes(1, 1, 40, 20) + outcomes(41, 0, 40, 20), s, NOW)
    assert ch.state.ab is None and ch.state.versions[1].status == "candidate" and not ch.events
    assert ch.state.history[-1].action == "ab_inconclusive"
