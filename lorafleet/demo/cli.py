"""`lorafleet demo`: mounted on the root group by shared/cli.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lorafleet.shared.errors import LorafleetError


def register(groups: dict[str, typer.Typer]) -> None:
    groups["root"].command("demo")(demo)


def _default_config() -> Path:
    # In a checkout: configs/ beside the package; else the working directory's configs/.
    root = Path(__file__).resolve().parents[1]
    candidate = root / "configs" / "demo_python_lora.yaml"
    return candidate if candidate.is_file() else Path("configs/demo_python_lora.yaml")


def demo(
    config: Annotated[Path, typer.Option(help="training config of the demo run")] = None,  # type: ignore[assignment]
    data_dir: Annotated[Path, typer.Option(help="NATS store, artifacts, logs and reports of the demo")] = Path(".lorafleet/demo"),
    timeout: Annotated[float, typer.Option(help="give up after this many seconds")] = 1500.0,
    stay: Annotated[bool, typer.Option("--stay", help="after the summary keep the fleet and the dashboard running until Ctrl-C")] = False,
) -> None:
    """The whole fleet on this machine: tiny model → train → evaluate → register → A/B on
    SIMULATED traffic → promote or roll back → automatic retrain; then a summary.
    Leaves no process behind (Ctrl-C included)."""
    from lorafleet.demo.run import run_demo

    config = config or _default_config()
    if not config.is_file():
        raise LorafleetError(f"demo config {config} not found: pass --config configs/demo_python_lora.yaml")
    raise typer.Exit(run_demo(config, data_dir, timeout, stay=stay))
