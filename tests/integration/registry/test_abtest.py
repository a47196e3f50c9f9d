"""The sequential A/B test on a real nats-server: the outcome recorder decides on every batch; a broken split
stops the test (`srm`, adapter.ab_srm) and `lorafleet registry ab` says so; an outcome for a version outside the
test is dead-lettered and counted nowhere; a promotion carries its always-valid figures."""

import asyncio
import json

import pytest
from registry_flowkit import read, wait_count
from registry_helpers import INFO, NOW, evaluated

from lorafleet.cli import main
from lorafleet.services.registry import core
from lorafleet.services.registry.outcomes import OutcomeRecorder
from lorafleet.services.registry.settings import RegistrySettings
from lorafleet.shared.bus import publish_event
from lorafleet.shared.events import STREAM, ProductionOutcome

NAME = "py"


@pytest.fixture
def registry_settings(monkeypatch, nats_url):
    # the CLI reads the same settings from the environment
    monkeypatch.setenv("LORAFLEET_NATS_URL", nats_url)
    for key, value in {"AB_MIN_SAMPLES": "50", "AB_TRAFFIC": "0.5", "OUTCOME_LINGER_MS": "2"}.items():
        monkeypatch.setenv(f"LORAFLEET_REGISTRY_{key}", value)
    return RegistrySettings()


async def send(js, version: int, n: int, successes: int, prefix: str, error_every: int = 0) -> None:
    await asyncio.gather(*(publish_event(js, ProductionOutcome(
        request_id="prod", adapter_name=NAME, version=version, request_key=f"{prefix}-{i}", success=i < successes,
        confidence=0.5, latency_ms=20.0 + i % 7, error=bool(error_every) and i % error_every == 0))
        for i in range(n)))


def cli(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return exit_info.value.code, out + err


@pytest.mark.timeout(120)
async def test_a_broken_split_stops_the_test_and_the_cli_says_so(nc, store, registry_settings, capsys):
    js = nc.jetstream()
    await store.apply(NAME, lambda s: core.register(s, evaluated(name=NAME), INFO, 1, NOW, registry_settings))
    recorder = await OutcomeRecorder(store).start()
    try:
        # a 50% split, but the candidate gets 4 outcomes for each of the control's; it also looks far better
        await send(js, 1, 400, 320, "c")
        await send(js, 0, 100, 40, "b")
        srm = await wait_count(js, "lorafleet.v1.adapter.ab_srm", 1)
        await recorder.wait_for((await js.get_last_msg(STREAM, "lorafleet.v1.production.outcome")).seq)
    finally:
        await recorder.stop()
    assert srm[0]["candidate_version"] == 1 and srm[0]["control_version"] is None and srm[0]["p_value"] <= 0.01
    state, _ = await store.get(NAME)
    assert state.ab.status == "srm" and state.versions[1].status == "ab_testing" and state.active is None
    assert await read(js, "lorafleet.v1.adapter.promoted") == []
    assert state.history[-1].action == "ab_srm" and state.history[-1].statistics["srm"]["detected"]

    code, out = await asyncio.to_thread(cli, capsys, "registry", "ab", NAME, "--json")
    data = json.loads(out)
    assert code == 0 and data["test"]["status"] == "srm" and data["statistics"]["srm"]["detected"]
    assert data["statistics"]["low"] < data["statistics"]["high"] and 0 <= data["statistics"]["p_value"] <= 1
    code, out = await asyncio.to_thread(cli, capsys, "registry", "ab", NAME)
    assert code == 0 and "SAMPLE-RATIO MISMATCH" in out and "confidence sequence [" in out and "status SRM" in out
    code, out = await asyncio.to_thread(cli, capsys, "registry", "show", NAME)
    assert code == 0 and "SAMPLE-RATIO MISMATCH" in out

    # fixing the split and setting the share again starts a fresh test
    code, out = await asyncio.to_thread(cli, capsys, "registry", "ab", NAME, "--traffic", "0.5")
    assert code == 0 and "status running" in out and "candidate 0/0" in out
    state, _ = await store.get(NAME)
    assert state.ab.status == "running" and state.history[-2].action == "ab_restarted"


@pytest.mark.timeout(120)
async def test_promotion_carries_the_figures_and_outsiders_are_dead_lettered(nc, store, registry_settings, capsys):
    js = nc.jetstream()
    s = registry_settings
    await store.apply(NAME, lambda st: core.register(st, evaluated(name=NAME, version=1), INFO, 1, NOW, s))
    await store.apply(NAME, lambda st: core.promote(st, NAME, 1, NOW))
    await store.apply(NAME, lambda st: core.register(st, evaluated(name=NAME, version=2), INFO, 2, NOW, s))
    recorder = await OutcomeRecorder(store).start()
    try:
        await send(js, 0, 5, 5, "base")  # the base model is not in the test v2 vs v1
        letters = await wait_count(js, "lorafleet.v1.dlq.registry", 5)
        assert all("not in the running A/B test (candidate v2, control v1): not counted" in x["error"] for x in letters)
        for start in range(0, 150, 10):  # both arms report as they are served (a burst from one arm is an SRM)
            await send(js, 2, 10, 8, f"c{start}", error_every=50 if start % 50 == 0 else 0)
            await send(js, 1, 10, 4, f"a{start}", error_every=50 if start % 50 == 0 else 0)
        promoted = await wait_count(js, "lorafleet.v1.adapter.promoted", 2)  # the manual one, then the test's
    finally:
        await recorder.stop()
    auto = promoted[-1]
    assert auto["version"] == 2 and auto["previous_version"] == 1 and auto["p_value"] <= 0.05
    low, high = auto["confidence_interval"]
    assert 0 < low < 0.4 < high and auto["statistics"]["method"].startswith("normal-mixture")
    assert [g["name"] for g in auto["statistics"]["guardrails"]] == ["errors", "latency"]
    state, _ = await store.get(NAME)
    assert state.active == 2 and state.base_metrics.requests == 0
    assert state.versions[2].metrics.errors == 3
    entry = next(h for h in reversed(state.history) if h.action == "promoted")
    assert entry.statistics["low"] == pytest.approx(low) and entry.statistics["decision"] == "promote"
    code, out = await asyncio.to_thread(cli, capsys, "registry", "history", NAME, "--json")
    assert code == 0 and json.loads(out)[-1]["statistics"]["p_better"] == pytest.approx(auto["p_value"])
    code, out = await asyncio.to_thread(cli, capsys, "registry", "ab", NAME)
    assert code == 0 and "no A/B test running (last: promoted v2" in out
