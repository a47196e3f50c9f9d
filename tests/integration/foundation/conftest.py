"""Fixtures of the foundation integration tests (real nats-server from tests/conftest.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from lorafleet.shared.events import STREAM
from lorafleet.shared.settings import Settings


async def wait_for(predicate: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def subject_counts(js, filter_subject: str = ">") -> dict[str, int]:
    info = await js.stream_info(STREAM, subjects_filter=filter_subject)
    return info.state.subjects or {}


async def messages_on(js, subject: str) -> list[bytes]:
    """Every message stored on `subject`, oldest first."""
    counts = await subject_counts(js, subject)
    total = sum(counts.values())
    if not total:
        return []
    sub = await js.pull_subscribe(subject, stream=STREAM)
    try:
        out = []
        while len(out) < total:
            for msg in await sub.fetch(total - len(out), timeout=5):
                out.append(msg.data)
        return out
    finally:
        await sub.unsubscribe()


@pytest.fixture
def settings(nats_url, tmp_path) -> Settings:
    return Settings(nats_url=nats_url, data_dir=tmp_path / "data", max_deliver=3, ack_wait_s=2.0,
                    retry_delay_s=0.0, duplicate_window_s=120)


@pytest.fixture
def h():
    """The helpers above, for test modules (importlib mode can't import conftest)."""
    from types import SimpleNamespace

    return SimpleNamespace(wait_for=wait_for, subject_counts=subject_counts, messages_on=messages_on)
