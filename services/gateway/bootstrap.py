"""Wires the gateway's real adapters: settings, the sandbox that judges attached tests, directories.

The bus connection, the router (KV watch), the artifact store and the backends' HTTP
session need the running loop, so app.py's `start_gateway` builds those.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lorafleet.shared.problems import Limits, TestCase
from lorafleet.shared.settings import Settings

from .settings import GatewaySettings

# code, tests, limits -> lorafleet.shared.sandbox.Judgement (blocking: run in a worker thread)
Judge = Callable[[str, list[TestCase], "Limits | None"], object]


def sandbox_judge(code: str, tests: list[TestCase], limits: Limits | None) -> object:
    """Stops at the first failing test: the outcome rule needs "all passed" or "one failed", not the count."""
    from lorafleet.shared.sandbox import RunLimits, default_sandbox

    run_limits = RunLimits.from_problem(limits) if limits is not None else None
    return default_sandbox().judge(code, tests, run_limits, False, True)


@dataclass
class Deps:
    settings: Settings
    gateway: GatewaySettings
    judge: Judge
    adapter_dir: Path
    spool_dir: Path


def bootstrap(settings: Settings, gateway: GatewaySettings | None = None, judge: Judge | None = None) -> Deps:
    gw = gateway or GatewaySettings()
    root = settings.data_dir / "gateway"
    return Deps(settings=settings, gateway=gw, judge=judge or sandbox_judge,
                adapter_dir=(gw.adapter_dir or root / "adapters").resolve(),
                spool_dir=(gw.spool_dir or root / "spool").resolve())
