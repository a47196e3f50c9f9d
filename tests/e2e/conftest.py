"""End-to-end fixtures: a tiny pipeline config, real service processes, the event log."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from e2e_support import EventLog, Fleet  # noqa: E402


@pytest.fixture
def fleet(nats_url, tmp_path):
    f = Fleet(nats_url, tmp_path / "data", env={
        "LORAFLEET_ACK_WAIT_S": "6", "LORAFLEET_MAX_DELIVER": "6", "LORAFLEET_RETRY_DELAY_S": "0.5",
    })
    try:
        yield f
    finally:
        f.stop()


@pytest.fixture
async def events(nats_url):
    log = await EventLog().start(nats_url)
    try:
        yield log
    finally:
        await log.close()
