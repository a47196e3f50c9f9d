"""`lorafleet demo`: mounted on the root group by shared/cli.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lorafleet.demo.run import AB_PATIENCE_S, RETRAIN_PATIENCE_S
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
    timeout: Annotated[float, typer.Option(help="give up after this many seconds (from the first train.requested)")] = 2400.0,
    summary_json: Annotated[Path, typer.Option(help="also write the summary as JSON to this file")] = None,  # type: ignore[assignment]
    stay: Annotated[bool, typer.Option("--stay", help="after the summary keep the fleet and the dashboard running until Ctrl-C")] = False,
    ab_patience: Annotated[float, typer.Option(help="seconds of traffic v2's A/B test gets before the demo stops waiting "
                                                    "for its decision (then still measures)")] = AB_PATIENCE_S,
    retrain_patience: Annotated[float, typer.Option(help="seconds of traffic the collector gets to request the retrain "
                                                         "before the demo fails")] = RETRAIN_PATIENCE_S,
) -> None:
    """The whole fleet on this machine: shipped tiny base → train → evaluate → register → real
    traffic through the gateway (answers judged in the sandbox) → A/B decision → retrain
    triggered by the collector from verified successes → v2 A/B-tested against v1 → pass@1
    of base, v1, v2 on a held-out production slice; exit 0 only when v2 − v1 > 0 (95% CI).
    Leaves no process behind (Ctrl-C included)."""
    from lorafleet.demo.run import run_demo

    config = config or _default_config()
    if not config.is_file():
        raise LorafleetError(f"demo config {config} not found: pass --config configs/demo_python_lora.yaml")
    for name, value in (("--ab-patience", ab_patience), ("--retrain-patience", retrain_patience)):
        if value <= 0:
            raise LorafleetError(f"{name} {value:g}: must be a positive number of seconds")
    raise typer.Exit(run_demo(config, data_dir, timeout, summary_json, stay=stay, ab_patience_s=ab_patience,
                              retrain_patience_s=retrain_patience))
