"""The demo's pure parts: stage times from event timestamps, pass rates, the verdict, simulated outcomes."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from lorafleet.demo.track import RunTrack, pass_rates, stage_times, verdict
from lorafleet.shared.events import (
    AdapterEvaluated,
    ArtifactRef,
    DatasetReady,
    StageFailed,
    TrainRequested,
)
from lorafleet.shared.synthetic import is_held_out
from lorafleet.demo.traffic import simulated_outcome

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


def test_simulated_outcomes_follow_the_rate_and_never_use_held_out_pairs():
    rng = random.Random(0)
    outcomes = [simulated_outcome(rng, adapter_name="a", version=1, rate=0.3, request_key=f"k{i}", run_id="t")
                for i in range(2000)]
    share = sum(o.success for o in outcomes) / len(outcomes)
    assert 0.26 < share < 0.34
    for o in outcomes:
        assert o.request_key.startswith("k") and o.version == 1
        if o.success:
            assert o.confidence > 0.9 and o.solution and o.tests
        else:
            assert o.confidence < 0.9 and o.solution is None
    never = [simulated_outcome(rng, adapter_name="a", version=0, rate=0.0, request_key="k", run_id="t") for _ in range(50)]
    assert not any(o.success for o in never)


def test_simulated_problems_are_training_pairs_only(monkeypatch):
    import lorafleet.demo.traffic as traffic

    seen = []
    real = traffic.make_problem

    def spy(family, k, c=0, n_tests=4):
        seen.append((family, k))
        return real(family, k, c, n_tests)

    monkeypatch.setattr(traffic, "make_problem", spy)
    rng = random.Random(1)
    for i in range(300):
        simulated_outcome(rng, adapter_name="a", version=1, rate=1.0, request_key=str(i), run_id="t")
    assert seen and not any(is_held_out(f, k) for f, k in seen)


def _demo():
    from pathlib import Path

    from lorafleet.demo.run import Demo

    class Quiet:
        def print(self, *a, **k) -> None:
            pass

    return Demo(Path("c.yaml"), Path("/tmp/x"), 60, Quiet())


def _feed(demo, *events):
    import asyncio

    for e in events:
        demo.on_event(e, "r", None, None, None, asyncio.Event(), "no-traffic-task")


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
    _feed(demo, AdapterRegistered(request_id="r2", adapter_name="a", version=2, lora_int_id=2, status="candidate"))
    assert "v2 is registered" in demo.finished("r")
    assert [demo.runs[r].reason for r in demo.order] == ["manual", "retrain"]
