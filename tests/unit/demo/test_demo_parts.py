"""The demo's pure parts: stage times from event timestamps, pass rates, the verdict, when it stops."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from lorafleet.demo.track import RunTrack, pass_rates, stage_times, verdict
from lorafleet.shared.events import (
    AdapterEvaluated,
    ArtifactRef,
    DatasetReady,
    StageFailed,
    TrainRequested,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
REF = ArtifactRef(uri="local://x", sha256="0" * 64)


def _request() -> TrainRequested:
    return TrainRequested(request_id="r", adapter_name="a", config={}, config_sha256="x", occurred_at=T0)


def _evaluated(metrics: dict, at: datetime = T0) -> AdapterEvaluated:
    return AdapterEvaluated(request_id="r", adapter_name="a", version=1, adapter=REF, base_model="b", rank=16,
                            target_modules=["q_proj"], gate_passed=True, gate=[], metrics=metrics, occurred_at=at)


def test_stage_times_come_from_the_events_own_timestamps():
    run = RunTrack("r", "demo")
    run.add(_request())
    run.add(DatasetReady(request_id="r", adapter_name="a", dataset=REF, config={}, config_sha256="x",
                         occurred_at=T0 + timedelta(seconds=12.5)))
    rows = stage_times(run.events)
    assert rows[0] == ("ingest", 12.5, "dataset.ready")
    assert rows[1] == ("enrich", None, "running")
    assert rows[2] == ("training", None, "not reached")
    assert not run.done


def test_a_failed_stage_ends_the_run_and_its_time():
    run = RunTrack("r", "demo")
    run.add(_request())
    run.add(StageFailed(request_id="r", stage="ingest", error="too few examples", retriable=False,
                        occurred_at=T0 + timedelta(seconds=3)))
    assert run.done and run.failed.error == "too few examples"
    assert stage_times(run.events)[0] == ("ingest", 3.0, "ingest.failed")


def test_pass_rates_and_verdict_follow_the_confidence_interval():
    metrics = {"base": {"pass@1": 0.0, "greedy_pass@1": 0.0}, "adapter": {"pass@1": 0.5, "greedy_pass@1": 0.9},
               "delta_pass@1": {"mean": 0.5, "low": 0.4, "high": 0.6}, "problems": 48}
    rates = pass_rates(_evaluated(metrics))
    assert rates["adapter"] == 0.5 and rates["delta_low"] == 0.4 and rates["problems"] == 48
    assert "beats the base" in verdict(rates)
    metrics["delta_pass@1"] = {"mean": 0.02, "low": -0.05, "high": 0.09}
    assert "did NOT" in verdict(pass_rates(_evaluated(metrics)))
    assert "no base-vs-adapter" in verdict(pass_rates(_evaluated({})))


def _demo():
    from pathlib import Path

    from lorafleet.demo.run import Demo

    class Quiet:
        def print(self, *a, **k) -> None:
            pass

    demo = Demo(Path("c.yaml"), Path("/tmp/x"), 60, Quiet())
    demo.traffic = FakeTraffic()
    from types import SimpleNamespace

    demo.split = SimpleNamespace(traffic=[], heldout=[])
    return demo


class FakeTraffic:
    """Stands in for the load generator's task (no gateway in a unit test): records the calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self, *a, **k) -> None:
        self.calls.append("start")

    def pause(self, why: str) -> None:
        self.calls.append("pause")


class Cfg:
    adapter_name = "a"


def _feed(demo, *events):
    for e in events:
        demo.on_event(e, Cfg())


def test_the_demo_stops_when_the_first_adapter_is_rejected():
    from lorafleet.shared.events import AdapterRejected

    demo = _demo()
    _feed(demo, _request())
    assert demo.finished("r") is None
    _feed(demo, AdapterRejected(request_id="r", adapter_name="a", version=1, reasons=["pass@1 too low"]))
    assert "rejected" in demo.finished("r")


def test_the_demo_waits_for_the_retrain_to_be_registered():
    from lorafleet.shared.events import AdapterPromoted, AdapterRegistered

    demo = _demo()
    _feed(demo, _request(), AdapterRegistered(request_id="r", adapter_name="a", version=1, lora_int_id=1, status="candidate"),
          AdapterPromoted(request_id="r", adapter_name="a", version=1, previous_version=None, reason="significant"))
    assert demo.finished("r") is None  # promoted; the retrain has not been requested yet
    retrain = TrainRequested(request_id="r2", adapter_name="a", config={}, config_sha256="x", reason="retrain")
    _feed(demo, retrain)
    assert demo.finished("r") is None  # the retrain is running
    assert demo.traffic.calls == ["pause"]  # the retrain gets the CPU
    _feed(demo, AdapterRegistered(request_id="r2", adapter_name="a", version=2, lora_int_id=2, status="candidate"))
    assert demo.finished("r") is None  # v2's A/B test on live traffic is not decided yet
    again = TrainRequested(request_id="r3", adapter_name="a", config={}, config_sha256="x", reason="retrain")
    _feed(demo, again)  # the pool refilled during v2's A/B test: not followed, traffic not paused
    assert demo.traffic.calls == ["pause"] and "r3" not in demo.runs
    _feed(demo, AdapterPromoted(request_id="r2", adapter_name="a", version=2, previous_version=1, reason="significant"))
    assert "decided v2" in demo.finished("r")
    assert [demo.runs[r].reason for r in demo.order] == ["manual", "retrain"]
    assert demo.failure is None


def test_an_ab_start_starts_the_traffic_and_outcomes_are_tallied_once():
    from lorafleet.shared.events import AdapterAbStarted, ProductionOutcome

    demo = _demo()
    _feed(demo, AdapterAbStarted(request_id="r", adapter_name="a", candidate_version=1, active_version=None, traffic=0.5))
    assert demo.traffic.calls == ["start"]
    o = ProductionOutcome(request_id="q1", adapter_name="a", version=1, request_key="user-1", success=True,
                          confidence=0.9375, latency_ms=40.0)
    _feed(demo, o, o, ProductionOutcome(request_id="q2", adapter_name="a", version=0, request_key="user-2",
                                        success=False, confidence=1.0, latency_ms=80.0))
    _feed(demo, ProductionOutcome(request_id="q3", adapter_name="a", version=1, request_key="user-3", success=False,
                                  confidence=0.0, latency_ms=60_000.0, error=True))  # serving failed: not judged
    fig = demo.outcomes.figures()
    assert fig["judged"] == 2 and fig["successes"] == 1 and fig["serving_errors"] == 1
    assert fig["by_version"] == {"v0": {"judged": 1, "successes": 0}, "v1": {"judged": 1, "successes": 1}}
    assert fig["gateway_latency_ms"] == {"p50": 40.0, "p99": 80.0}


def test_the_collector_not_retraining_in_time_fails_the_demo():
    from lorafleet.shared.events import AdapterAbStarted, AdapterRegistered

    demo = _demo()
    _feed(demo, _request(), AdapterRegistered(request_id="r", adapter_name="a", version=1, lora_int_id=1, status="candidate"),
          AdapterAbStarted(request_id="r", adapter_name="a", candidate_version=1, active_version=None, traffic=0.5))
    assert demo.finished("r") is None
    demo.retrain_patience_s = -1.0
    assert "no retrain" in demo.finished("r") and demo.failure


def test_an_open_ab_test_is_described_with_its_state_and_interval():
    from lorafleet.demo.summary import _open_test
    from lorafleet.services.registry.abtest import Running
    from lorafleet.services.registry.model import AbTest

    ab = AbTest(candidate=2, control=1, traffic=0.5, started_at=T0, salt="s")
    assert _open_test(ab) == "A/B test of v2 still running (undecided)"
    ab = ab.model_copy(update={"status": "srm", "running": Running(low=0.09, high=0.227, srm_p=0.00757)})
    text = _open_test(ab)
    assert "v2 stopped on a sample-ratio mismatch (p 0.00757)" in text and "[+0.090, +0.227]" in text
