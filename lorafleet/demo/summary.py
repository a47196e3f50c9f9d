"""The demo's closing summary: what each run measured, the traffic, the decisions, the registry."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from lorafleet.demo.track import STAGES, kind_of, pass_rates, stage_times, verdict

log = logging.getLogger("lorafleet.demo")


async def print_summary(self: Any, js: Any, settings: Any, cfg: Any) -> bool:
    """Stage times, pass rates with their CI and gate per run, traffic, decisions, the registry table."""
    from rich.table import Table

    console = self.console
    console.rule("[bold]lorafleet demo: summary")
    times = Table("stage", *[("retrain" if self.runs[r].reason == "retrain" else "first run") for r in self.order],
                  title="stage times (s)")
    for stage in ("tiny model", "startup"):
        times.add_row(stage, f"{self.timings.get(stage, 0):.1f}", *[""] * (len(self.order) - 1))
    rows = [stage_times(self.runs[r].events) for r in self.order]
    for i, (stage, _, _) in enumerate(STAGES):
        times.add_row(stage, *[(f"{row[i][1]:.1f}" if row[i][1] is not None else row[i][2]) for row in rows])
    console.print(times)

    ok = False
    for r in self.order:
        run = self.runs[r]
        ev = run.events.get("adapter.evaluated")
        name = "retrain" if run.reason == "retrain" else "first run"
        if ev is None:
            console.print(f"{name}: no evaluation" + (f" ({kind_of(run.failed)}: {run.failed.error[:300]})" if run.failed else ""))
            continue
        rates = pass_rates(ev)
        table = Table("", "base", "adapter", "Δ (95% CI)", title=f"{name}: v{ev.version} on {rates['problems']} held-out problems")
        table.add_row("pass@1 (sampled)", _f(rates["base"]), _f(rates["adapter"]),
                      f"{_f(rates['delta'])} [{_f(rates['delta_low'])}, {_f(rates['delta_high'])}]")
        table.add_row("greedy pass@1", _f(rates["base_greedy"]), _f(rates["adapter_greedy"]), "")
        console.print(table)
        gate = Table("criterion", "measured", "threshold", "passed", title=f"{name}: gate (from {self.config_path})")
        for c in ev.gate:
            gate.add_row(c.name, _f(c.measured), f"{c.comparison} {c.threshold:g}", "[green]yes[/green]" if c.passed else "[red]no[/red]")
        console.print(gate)
        console.print(f"{name}: [bold]{verdict(rates)}[/bold]")
        if run.reason != "retrain":
            ok = rates.get("delta_low") is not None and rates["delta_low"] > 0
        if ev.report is not None:
            path = await fetch_report(self, js, settings, ev)
            console.print(f"{name}: report {path}")

    if self.sim_stats:
        sim = Table("arm", "requests", "successes", title=f"{_sim_label()} ({self.sim_sent} requests)")
        for arm, (n, s) in sorted(self.sim_stats.items()):
            sim.add_row(arm, str(n), str(s))
        console.print(sim)
    for d in self.decisions:
        console.print(f"registry decision: {d.event_type} ({d.reason})")
    await registry_table(self, js, cfg.adapter_name)
    elapsed = time.monotonic() - self.t0
    console.print(f"total {elapsed:.0f}s; logs in {self.data_dir / 'logs'}")
    return ok

async def fetch_report(self: Any, js: Any, settings: Any, ev: Any) -> Path:
    from lorafleet.shared.artifacts import open_store

    dest = self.data_dir / "reports" / f"{ev.adapter_name}-v{ev.version}"
    try:
        store = open_store(settings, js=js)
        await store.get_dir(ev.report, dest)
    except Exception as exc:
        log.warning("could not fetch the report %s: %s", ev.report.uri, exc)
        return Path(ev.report.uri)
    html = dest / "report.html"
    return html if html.is_file() else dest

async def registry_table(self: Any, js: Any, adapter_name: str) -> None:
    from rich.table import Table

    try:
        from lorafleet.services.registry.model import AdapterState
        from lorafleet.services.registry.settings import RegistrySettings

        kv = await js.key_value(RegistrySettings().bucket)
        entry = await kv.get(f"adapter.{adapter_name}")
        state = AdapterState.model_validate_json(entry.value)
    except Exception as exc:
        self.console.print(f"registry: no entry for {adapter_name} ({type(exc).__name__})")
        return
    table = Table("version", "status", "lora_int_id", "rank", "requests", "successes", "active",
                  title=f"registry: {adapter_name}")
    for v in sorted(state.versions.values(), key=lambda v: v.version):
        table.add_row(f"v{v.version}", str(v.status), str(v.lora_int_id), str(v.rank), str(v.metrics.requests),
                      str(v.metrics.successes), "[bold green]active[/bold green]" if state.active == v.version else "")
    self.console.print(table)
    self.console.print(f"active version: {('v' + str(state.active)) if state.active else 'none (the base model serves)'}"
                       + (f"; A/B test running: v{state.ab.candidate}" if state.ab else ""))



def _f(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def _sim_label() -> str:
    from lorafleet.demo.traffic import LABEL

    return LABEL
