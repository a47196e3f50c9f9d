"""Wires the registry's real adapters: settings, the sandbox check, the artifact reader.

The KV store, router, outcome recorder and collector need the bus connection,
so app.py's start hook fills them in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lorafleet.shared.errors import RetriableError
from lorafleet.shared.problems import Limits, TestCase
from lorafleet.shared.settings import Settings

from .adapter_files import fetch_adapter
from .settings import RegistrySettings


async def sandbox_verify(code: str, tests: list[TestCase], limits: Limits) -> tuple[bool, str]:
    from lorafleet.shared.sandbox import RunLimits, ajudge

    judgement = await ajudge(code, tests, RunLimits.from_problem(limits))
    if judgement.verdict == "sandbox_error":
        # The sandbox failed, not the solution: the bus redelivers the outcome instead of dropping a candidate.
        raise RetriableError(f"sandbox could not re-verify the solution: {judgement.detail}")
    return judgement.verdict == "passed", f"{judgement.verdict}, {judgement.passed_tests}/{judgement.total_tests} tests"


@dataclass
class Deps:
    settings: RegistrySettings
    verify: Any = sandbox_verify
    fetch_adapter: Any = fetch_adapter
    store: Any = None
    router: Any = None
    recorder: Any = None
    collector: Any = None
    background: list = field(default_factory=list)
    stop: Any = None


def bootstrap(settings: Settings, registry: RegistrySettings | None = None) -> Deps:
    return Deps(settings=registry or RegistrySettings())
