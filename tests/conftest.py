"""Fixtures every test area shares. Real nats-server only: no in-memory broker."""

from __future__ import annotations

import pytest

from lorafleet.shared.nats_server import NatsServer


@pytest.fixture
def nats_server(tmp_path):
    """A fresh JetStream nats-server on a free loopback port; stopped (by pid group) after the test."""
    server = NatsServer(store_dir=tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_url(nats_server) -> str:
    return nats_server.url


@pytest.fixture(autouse=True)
def _restore_environ():
    """Code under test (the CLI's --nats-url, the demo's settings) may set os.environ in-process;
    no test may leak that into the next one (or into the subprocesses later tests start)."""
    import os

    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
