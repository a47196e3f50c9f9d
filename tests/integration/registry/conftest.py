import sys
from pathlib import Path

import nats
import pytest

from lorafleet.services.registry.settings import RegistrySettings
from lorafleet.services.registry.store import RegistryStore
from lorafleet.shared.bus import ensure_stream
from lorafleet.shared.settings import Settings

# Shared builders live beside the unit tests (pytest runs with --import-mode=importlib).
sys.path.insert(0, str(Path(__file__).parents[2] / "unit" / "registry"))
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
async def nc(nats_url):
    client = await nats.connect(nats_url)
    await ensure_stream(client.jetstream(), Settings(nats_url=nats_url))
    yield client
    await client.close()


@pytest.fixture
def registry_settings():
    return RegistrySettings(ab_min_samples=50, outcome_linger_ms=2)


@pytest.fixture
async def store(nc, registry_settings):
    return await RegistryStore.open(nc.jetstream(), registry_settings)
