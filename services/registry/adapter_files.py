"""Reading what an adapter artifact says about itself (adapter_config.json, training_summary.json)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from lorafleet.shared.events import ArtifactRef

from .core import RegistryError
from .model import AdapterInfo


def parse_adapter_config(data: dict[str, Any], origin: str = "adapter_config.json") -> AdapterInfo:
    """peft's adapter_config.json → rank, alpha, target modules, base model (pure)."""
    rank = data.get("r")
    if not isinstance(rank, int) or rank < 1:
        raise RegistryError(f"{origin} has no valid LoRA rank `r` (got {rank!r}): is this a peft LoRA adapter?")
    modules = data.get("target_modules")
    if isinstance(modules, str):
        modules = [modules]  # peft allows a regex or "all-linear"
    if not modules or not all(isinstance(m, str) for m in modules):
        raise RegistryError(f"{origin} has no `target_modules` (got {modules!r})")
    alpha = data.get("lora_alpha")
    return AdapterInfo(rank=rank, lora_alpha=float(alpha) if isinstance(alpha, (int, float)) else None,
                       target_modules=sorted(modules), base_model=data.get("base_model_name_or_path"))


def read_adapter_dir(path: Path) -> tuple[AdapterInfo, dict[str, Any] | None]:
    config_path = path / "adapter_config.json"
    if not config_path.is_file():
        raise RegistryError(f"the adapter artifact has no adapter_config.json (files: {sorted(p.name for p in path.iterdir())})")
    try:
        info = parse_adapter_config(json.loads(config_path.read_text()))
    except json.JSONDecodeError as exc:
        raise RegistryError(f"adapter_config.json is not JSON: {exc}") from exc
    train_config = None
    summary = path / "training_summary.json"
    if summary.is_file():
        try:
            data = json.loads(summary.read_text())
            train_config = data.get("config") if isinstance(data.get("config"), dict) else None
        except json.JSONDecodeError:
            train_config = None
    return info, train_config


async def fetch_adapter(artifacts, ref: ArtifactRef) -> tuple[AdapterInfo, dict[str, Any] | None]:
    """Download the adapter (sha256-checked by the store) and read its own description."""
    with tempfile.TemporaryDirectory(prefix="lorafleet-registry-") as tmp:
        path = await artifacts.get_dir(ref, Path(tmp) / "adapter")
        return read_adapter_dir(path)
