"""`lorafleet train CONFIG --wait`: publishes train.requested and follows the request's events."""

import asyncio

from lorafleet.services.trainer.cli import _train
from lorafleet.shared.bus import publish_event
from lorafleet.shared.config import load_config
from lorafleet.shared.events import AdapterEvaluated, ArtifactRef, GateCriterion, StageFailed, TrainingProgress

from trainer_helpers import ROOT, wait_for


async def pipeline(js, event_log, outcome: str) -> None:
    """Stands in for the services: answers the train.requested with progress and an outcome."""
    await wait_for(lambda: event_log.of("train.requested"), timeout=20, what="train.requested")
    [request] = event_log.of("train.requested")
    for step in (5, 10):
        await publish_event(js, request.follow(TrainingProgress, step, adapter_name=request.adapter_name, step=step,
                                               total_steps=10, loss=1.0 / step, learning_rate=1e-3))
    if outcome == "evaluated":
        ref = ArtifactRef(uri="file:///tmp/x", sha256="0" * 64)
        await publish_event(js, request.follow(
            AdapterEvaluated, adapter_name=request.adapter_name, version=1, adapter=ref, base_model="b", rank=16,
            target_modules=["q_proj"], gate_passed=True,
            gate=[GateCriterion(name="pass_at_1", measured=0.5, threshold=0.2, comparison=">=", passed=True)]))
    else:
        await publish_event(js, request.follow(StageFailed, stage="training", adapter_name=request.adapter_name,
                                               error="dataset has 3 training examples", retriable=False))


async def test_wait_follows_until_evaluated(settings, js, event_log, capsys):
    cfg = load_config(ROOT / "configs" / "tiny_python_lora.yaml")
    code, _ = await asyncio.gather(_train(settings, cfg, wait=True, timeout=30), pipeline(js, event_log, "evaluated"))
    out = capsys.readouterr().out
    assert code == 0
    assert "train.requested tiny-python-lora" in out and "gate passed" in out
    [request] = event_log.of("train.requested")
    assert request.config == cfg.model_dump(mode="json") and request.config_sha256 == cfg.sha256()
    assert request.request_id == request.event_id


async def test_wait_exits_nonzero_on_failure(settings, js, event_log, capsys):
    cfg = load_config(ROOT / "configs" / "tiny_python_lora.yaml")
    code, _ = await asyncio.gather(_train(settings, cfg, wait=True, timeout=30), pipeline(js, event_log, "failed"))
    assert code == 1 and "training.failed" in capsys.readouterr().out


async def test_without_wait_only_publishes(settings, js, event_log, capsys):
    cfg = load_config(ROOT / "configs" / "tiny_math_lora.yaml")
    assert await _train(settings, cfg, wait=False, timeout=1) == 0
    await wait_for(lambda: event_log.of("train.requested"), timeout=10, what="train.requested")
    assert "lorafleet events tail --follow --request" in capsys.readouterr().out
