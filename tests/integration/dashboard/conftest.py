import sys
from pathlib import Path

import pytest

from lorafleet.shared.settings import Settings

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def settings(nats_url, tmp_path):
    return Settings(nats_url=nats_url, data_dir=tmp_path / "data", ack_wait_s=5, max_deliver=2, retry_delay_s=0.2)


@pytest.fixture
async def registry(settings, monkeypatch):
    """The real registry service, in this process."""
    monkeypatch.setenv("LORAFLEET_REGISTRY_AB_MIN_SAMPLES", "40")
    monkeypatch.setenv("LORAFLEET_REGISTRY_AB_TRAFFIC", "0.5")
    monkeypatch.setenv("LORAFLEET_REGISTRY_OUTCOME_LINGER_MS", "2")
    from lorafleet.services.registry.app import service

    async with service.running(settings) as runner:
        yield runner
