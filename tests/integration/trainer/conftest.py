"""Fixtures of the trainer integration tests: a real nats-server, the random-init tiny model."""

from __future__ import annotations

import sys
from pathlib import Path

# pytest runs with --import-mode=importlib: make trainer_helpers importable.
sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402

from lorafleet.shared.settings import Settings  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dir():
    """The random-init tiny model from the model cache (keyed by a hash of its recipe and corpus)."""
    from lorafleet.services.trainer.tiny_model import cached_tiny

    return cached_tiny(False)


@pytest.fixture
def settings(nats_url, tmp_path) -> Settings:
    return Settings(nats_url=nats_url, data_dir=tmp_path / "data", max_deliver=3, ack_wait_s=3.0,
                    retry_delay_s=0.0, duplicate_window_s=120)




@pytest.fixture
async def event_log(js):
    from trainer_helpers import EventLog

    log = await EventLog().start(js)
    yield log
    await log.sub.unsubscribe()


