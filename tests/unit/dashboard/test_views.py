"""The dashboard's pure views: stage timeline, training curve, A/B series, services rows, action parsing."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from lorafleet.services.dashboard import actions, views
from lorafleet.services.dashboard.views import Rec
from lorafleet.services.registry.model import AbTest, AdapterState, Counters, Evaluation, Version
from lorafleet.services.registry.settings import RegistrySettings
from lorafleet.shared.events import ArtifactRef

T0 = "2026-01-01T00:00:{:02d}+00:00"


def rec(seq: int, type_: str, second: int = 0, **data) -> Rec:
    return Rec(seq, type_, {"request_id": "r1", "occurred_at": T0.format(second), **data})


def test_stage_timeline_states_durations_and_failures():
    events = [rec(1, "train.requested", 0), rec(2, "dataset.ready", 3), rec(3, "dataset.enriched", 4),
              rec(4, "training.failed", 9, error="CUDA out of memory", retriable=False)]
    stages = {s["service"]: s for s in views.stage_timeline(events)}
    assert stages["ingest"]["state"] == "done" and stages["ingest"]["seconds"] == 3.0
    assert stages["enrich"]["seconds"] == 1.0
    assert stages["trainer"]["state"] == "failed" and "out of memory" in stages["trainer"]["failures"][0]["error"]
    assert stages["evaluator"]["state"] == "waiting" and stages["registry"]["state"] == "waiting"


def test_stage_timeline_rejected_and_shards():
    events = [rec(1, "adapter.trained", 0), rec(2, "eval.shard_requested", 1, shard_count=3, shard_index=0),
              rec(3, "eval.shard_done", 2, shard_index=0), rec(4, "eval.shard_done", 3, shard_index=0),
              rec(5, "adapter.evaluated", 4), rec(6, "adapter.rejected", 5)]
    stages = {s["service"]: s for s in views.stage_timeline(events)}
    assert stages["evaluator"]["shards"] == {"done": 1, "total": 3}  # a redelivered shard counts once
    assert stages["registry"]["state"] == "rejected"
    row = views.run_row(rec(0, "train.requested", 0, adapter_name="a", reason="manual"), events)
    assert row["state"] == "rejected"


def test_training_curve_last_report_per_step_wins_and_keeps_last_loss():
    events = [rec(i, "training.progress", i, step=s, total_steps=4, loss=l, eval_pass_at_1=p)
              for i, (s, l, p) in enumerate([(1, 2.0, None), (2, 1.5, 0.25), (2, 1.4, 0.5), (4, None, None)])]
    curve = views.training_curve(events)
    assert curve["step"] == [1, 2, 4]
    assert curve["loss"] == [2.0, 1.4, None] and curve["eval_pass_at_1"] == [None, 0.5, None]
    assert curve["last"]["step"] == 4 and curve["last"]["loss"] == 1.4


def _state(ab: bool = True) -> AdapterState:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    version = Version(name="a", version=1, status="ab_testing" if ab else "active", lora_int_id=1,
                      artifact=ArtifactRef(uri="obj://x", sha256="0" * 64), rank=4, target_modules=["q_proj"],
                      base_model="tiny", created_at=now, evaluation=Evaluation(gate_passed=True), request_id="r1",
                      source_event_id="e1", metrics=Counters(requests=3, successes=2))
    return AdapterState(name="a", versions={1: version}, active=None if ab else 1,
                        ab=AbTest(candidate=1, control=None, traffic=0.5, started_at=now, salt="s") if ab else None,
                        base_metrics=Counters(requests=2, successes=0))


def outcome(seq: int, version: int, success: bool) -> Rec:
    return Rec(seq, "production.outcome", {"adapter_name": "a", "version": version, "success": success,
                                           "occurred_at": T0.format(seq % 60)})


def test_ab_panel_series_counts_and_interval():
    started = Rec(10, "adapter.ab_started", {"candidate_version": 1, "active_version": None, "traffic": 0.5})
    outs = [outcome(11, 1, True), outcome(12, 0, False), outcome(13, 1, True), outcome(14, 0, False),
            outcome(15, 1, False), Rec(16, "production.outcome", {"adapter_name": "other", "version": 1, "success": True}),
            outcome(17, 7, True)]  # another adapter and a version outside the test count nowhere
    panel = views.ab_panel(_state(), RegistrySettings(), started, outs, None)
    s = panel["series"]
    assert s["candidate_n"][-1] == 3 and s["control_n"][-1] == 2
    assert s["candidate_rate"][-1] == pytest.approx(2 / 3) and s["control_rate"][-1] == 0.0
    assert s["diff_low"][-1] < 2 / 3 < s["diff_high"][-1]
    assert panel["running"] and panel["ab_statistics"]["candidate_n"] == 3  # the registry's own summary


def test_ab_panel_stops_at_the_decision():
    started = Rec(10, "adapter.ab_started", {"candidate_version": 1, "active_version": None, "traffic": 0.5})
    decision = Rec(13, "adapter.promoted", {"version": 1, "reason": "A/B", "occurred_at": T0.format(13)})
    outs = [outcome(11, 1, True), outcome(12, 0, False), outcome(14, 1, True), outcome(15, 0, False)]
    panel = views.ab_panel(_state(ab=False), RegistrySettings(), started, outs, decision)
    assert panel["series"]["outcomes"] == [1, 2] and not panel["running"]
    assert panel["decision"]["type"] == "adapter.promoted"


def test_ab_panel_thins_long_series_but_keeps_the_last_point():
    started = Rec(1, "adapter.ab_started", {"candidate_version": 1, "active_version": None, "traffic": 0.5})
    outs = [outcome(i + 2, i % 2, i % 3 == 0) for i in range(1001)]
    series = views.ab_panel(_state(), RegistrySettings(), started, outs, None)["series"]
    assert len(series["outcomes"]) <= views.MAX_SERIES_POINTS + 1 and series["outcomes"][-1] == 1001


def test_services_view_matches_status_rows_and_lists_dead_letters_newest_first():
    consumers = [{"name": "ingest", "pending": 2, "ack_pending": 1, "redelivered": 3, "waiting_pulls": 0}]
    letters = [Rec(5, "dlq.ingest", {"service": "ingest", "reason": "invalid", "error": "Traceback\nValueError: bad",
                                     "subject": "lorafleet.v1.train.requested"}),
               Rec(9, "dlq.ingest", {"service": "ingest", "reason": "max_deliver", "error": "boom"})]
    data = views.services_view({"name": "LORAFLEET"}, consumers, {"lorafleet.v1.dlq.ingest": 2},
                               {"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.LORAFLEET.ingest": 1}, letters)
    assert data["services"] == [{"service": "ingest", "consumer": True, "pending": 2, "ack_pending": 1, "redelivered": 3,
                                 "waiting_pulls": 0, "dead_letters": 2, "max_delivery_advisories": 1}]
    assert [d["seq"] for d in data["dead_letters"]] == [9, 5] and data["dead_letters"][1]["error"] == "ValueError: bad"
    assert views.services_view({}, [], {}, {}, [Rec(1, "dlq.x", {"error": "invalid event: 3 errors\nfield x\nmore"})])[
        "dead_letters"][0]["error"] == "invalid event: 3 errors"


@pytest.mark.parametrize("kind, body, needle", [
    ("promote", {"adapter": "a", "version": "two"}, "version"),
    ("promote", {"version": 2}, "adapter"),
    ("ab", {"adapter": "a", "traffic": 1.5}, "traffic"),
    ("rollback", {"adapter": "a", "force": True}, "force"),
    ("replay", {"seq": 0}, "seq"),
    ("promote", ["a"], "JSON object"),
    ("delete", {"adapter": "a"}, "unknown action"),
])
def test_malformed_actions_name_the_problem(kind, body, needle):
    with pytest.raises(actions.BadAction, match=needle):
        actions.parse_action(kind, body)


def test_brief_summarises_for_the_feed():
    b = views.brief(Rec(3, "production.outcome", {"adapter_name": "a", "version": 2, "success": True, "latency_ms": 41.6,
                                                  "request_id": "q"}))
    assert b["summary"] == "v2 success 42 ms" and b["adapter_name"] == "a"
    assert views.brief(Rec(4, "dlq.trainer", {"service": "trainer", "reason": "invalid"}))["adapter_name"] == "trainer"


def test_queue_history_keeps_the_last_minutes_per_service():
    from lorafleet.services.dashboard.reader import QueueHistory

    h = QueueHistory(interval_s=5, keep_s=10)  # three samples
    for i in range(5):
        consumers = [{"name": "ingest", "pending": i, "ack_pending": 1, "redelivered": 0}]
        if i == 4:
            consumers.append({"name": "trainer", "pending": 7, "ack_pending": 0, "redelivered": 2})
        h.add(100.0 + 5 * i, consumers)
    s = h.series()
    assert s["t"] == [110.0, 115.0, 120.0]
    assert s["services"]["ingest"]["pending"] == [2, 3, 4]
    assert s["services"]["trainer"]["redelivered"] == [None, None, 2]  # appeared in the last sample
