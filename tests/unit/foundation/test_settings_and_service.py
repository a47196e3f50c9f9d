"""Pure parts of the foundation: settings, service wiring, dead-letter records, deterministic tars."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from lorafleet.shared.artifacts import ArtifactError, _check_name, sha256_file, tar_dir
from lorafleet.shared.bus import dlq_subject, subject_of
from lorafleet.shared.dead_letters import DeadLetter, make_dead_letter
from lorafleet.shared.service import Service
from lorafleet.shared.errors import ConfigError
from lorafleet.shared.events import DatasetReady, StageFailed, TrainRequested
from lorafleet.shared.settings import Settings, get_settings


def test_nats_url_cluster_list_and_bad_urls(monkeypatch):
    s = get_settings(nats_url="nats://a:4222, b:4223,tls://c:1")
    assert s.nats_servers() == ["nats://a:4222", "nats://b:4223", "tls://c:1"]
    assert get_settings(nats_url="").nats_url is None
    for bad in ("http://x:4222", "nats://:4222", "nats://h:notaport"):
        with pytest.raises(ConfigError, match="LORAFLEET_NATS_URL"):
            get_settings(nats_url=bad)
    monkeypatch.setenv("LORAFLEET_MAX_DELIVER", "0")
    with pytest.raises(ConfigError, match="LORAFLEET_MAX_DELIVER"):
        get_settings()


def test_env_prefix_and_derived_values(monkeypatch):
    monkeypatch.setenv("LORAFLEET_ACK_WAIT_S", "30")
    monkeypatch.setenv("LORAFLEET_DATA_DIR", "/srv/lf")
    s = get_settings()
    assert s.heartbeat_interval_s == 10 and s.local_artifact_root == Path("/srv/lf/artifacts")


def test_service_subjects_and_consumer_config():
    service = Service("registry")

    @service.handler(DatasetReady)
    async def on_dataset_ready(event, ctx):
        return None

    @service.handler(StageFailed)
    async def on_stage_failed(event, ctx):
        return None

    assert service.subjects == ["lorafleet.v1.*.failed", "lorafleet.v1.dataset.ready"]
    config = service.consumer_config(Settings(max_deliver=7, ack_wait_s=12))
    assert (config.durable_name, config.max_deliver, config.ack_wait) == ("registry", 7, 12)
    assert config.filter_subjects == service.subjects
    with pytest.raises(ValueError, match="already handles"):
        service.handler(DatasetReady)(on_dataset_ready)
    with pytest.raises(ValueError, match="alphanumeric"):
        Service("bad.name")


def test_outcome_subjects():
    req = TrainRequested(request_id="r", adapter_name="a", config={}, config_sha256="c")
    failed = req.follow(StageFailed, stage="training", error="x", retriable=False)
    assert subject_of(failed) == "lorafleet.v1.training.failed"
    assert subject_of(req) == "lorafleet.v1.train.requested"
    assert dlq_subject("trainer") == "lorafleet.v1.dlq.trainer"


def test_dead_letter_keeps_the_original_even_when_binary():
    msg = Msg(None, subject="lorafleet.v1.train.requested", data=b"\xff\x00garbage")
    letter = make_dead_letter("ingest", msg, "invalid", "invalid train.requested event: bad")
    assert letter.original_encoding == "base64" and letter.original_bytes() == b"\xff\x00garbage"
    again = DeadLetter.model_validate_json(letter.model_dump_json())
    assert again.original_bytes() == b"\xff\x00garbage" and again.stream_seq is None


def test_tar_is_deterministic_and_names_are_checked(tmp_path):
    src = tmp_path / "d"
    (src / "a").mkdir(parents=True)
    (src / "a" / "x.txt").write_text("x")
    tar_dir(src, tmp_path / "1.tar")
    (src / "a" / "x.txt").touch()
    tar_dir(src, tmp_path / "2.tar")
    assert sha256_file(tmp_path / "1.tar") == sha256_file(tmp_path / "2.tar")
    assert _check_name("datasets/r1/d.tar") == "datasets/r1/d.tar"
    with pytest.raises(ArtifactError):
        _check_name("../etc/passwd")
