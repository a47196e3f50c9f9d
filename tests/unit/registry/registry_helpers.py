"""Shared builders for registry tests."""

from __future__ import annotations

from datetime import datetime, timezone

from lorafleet.services.registry.model import AdapterInfo
from lorafleet.shared.events import AdapterEvaluated, ArtifactRef, GateCriterion

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
INFO = AdapterInfo(rank=32, lora_alpha=64, target_modules=["q_proj", "v_proj"], base_model="tiny")


def evaluated(name: str = "python-lora", version: int = 1, passed: bool = True, sha: str | None = None,
              rank: int = 32, target_modules: list[str] | None = None) -> AdapterEvaluated:
    return AdapterEvaluated(
        request_id=f"req-{name}-{version}", adapter_name=name, version=version,
        adapter=ArtifactRef(uri=f"obj://lorafleet-artifacts/adapters/{name}/v{version}", sha256=sha or f"{version:064x}"),
        base_model="tiny", rank=rank, target_modules=target_modules or ["q_proj", "v_proj"], domains=["python"],
        gate_passed=passed,
        gate=[GateCriterion(name="pass@1 delta", measured=0.1 if passed else -0.02, threshold=0.02,
                            comparison=">=", passed=passed)],
        metrics={"pass@1": {"base": 0.1, "adapter": 0.2}},
    )
