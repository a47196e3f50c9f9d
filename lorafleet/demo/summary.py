"""The demo's closing summary: what each run measured, the production slice, the traffic,
the A/B decisions, the registry; and the same as JSON (--summary-json)."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from lorafleet.demo.track import STAGES, kind_of, pass_rates, stage_times, verdict

log = logging.getLogger("lorafleet.demo")


def stage_seconds(timings: dict[str, float], runs: list[tuple[str, dict[str, Any]]]) -> dict[str, float]:
    """stage name -> seconds: the demo's own steps, then each run's pipeline stages
    ("retrain ingest", ...) from the events' timestamps."""
    out = {k: round(v, 1) for k, v in timings.items()}
    for label, events in runs:
        for stage, seconds, _ in stage_times(events):
            if seconds is not None:
                out[f"{label}{stage}"] = round(seconds, 1)
    return out


def summary_dict(*, adapter_name: str, versions: list[dict[str, Any]], production_eval: dict[str, Any] | None,
                 traffic: dict[str, Any], runs: list[str], stages: dict[str, float], decisions: list[dict[str, Any]],
                 improved: bool, failure: str | None) -> dict[str, Any]:
    """The JSON summary (issue 18's fields first). Pure."""
    return {
        "adapter_name": adapter_name,
        "versions": versions,
        "production_eval": production_eval,
        "traffic": traffic,
        "runs": runs,
        "stages": stages,
        "ab_decisions": decisions,
        "improved": improved,
        "failure": failure,
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


async def print_summary(self: Any, js: Any, settings: Any, cfg: Any) -> bool:
    """Print everything; write the JSON; True when the demo succeeded: no failure, and the CI of
    v2 − v1 on the held-out production slice lies above zero."""
    from rich.table import Table

    from lorafleet.demo.measure import improved

    console = self.console
    console.rule("[bold]lorafleet demo: summary")
    labels = [("retrain " if self.runs[r].reason == "retrain" else "") for r in self.order]
    stages = stage_seconds(self.timings, [(label, self.runs[r].events) for label, r in zip(labels, self.order)])
    times = Table("stage", *[("retrain" if label else "first run") for label in labels], title="stage times (s)")
    for stage in ("tiny model", "startup", "production eval"):
        if stage in self.timings:
            times.add_row(stage, f"{self.timings[stage]:.1f}", *[""] * (len(self.order) - 1))
    rows = [stage_times(self.runs[r].events) for r in self.order]
    for i, (stage, _, _) in enumerate(STAGES):
        times.add_row(stage, *[(f"{row[i][1]:.1f}" if row[i][1] is not None else row[i][2]) for row in rows])
    console.print(times)

    for label, r in zip(labels, self.order):
        run = self.runs[r]
        ev = run.events.get("adapter.evaluated")
        name = "retrain" if label else "first run"
        if ev is None:
            console.print(f"{name}: no evaluation" + (f" ({kind_of(run.failed)}: {run.failed.error[:300]})" if run.failed else ""))
            continue
        rates = pass_rates(ev)
        table = Table("", "base", "adapter", "Δ (95% CI)",
                      title=f"{name}: v{ev.version} on {rates['problems']} held-out problems of the training families")
        table.add_row("pass@1 (sampled)", _f(rates["base"]), _f(rates["adapter"]),
                      f"{_f(rates['delta'])} [{_f(rates['delta_low'])}, {_f(rates['delta_high'])}]")
        table.add_row("greedy pass@1", _f(rates["base_greedy"]), _f(rates["adapter_greedy"]), "")
        console.print(table)
        gate = Table("criterion", "measured", "threshold", "passed", title=f"{name}: gate (from {self.config_path})")
        for c in ev.gate:
            gate.add_row(c.name, _f(c.measured), f"{c.comparison} {c.threshold:g}", "[green]yes[/green]" if c.passed else "[red]no[/red]")
        console.print(gate)
        console.print(f"{name}: [bold]{verdict(rates)}[/bold]")

    pe = self.production_eval
    if pe:
        sampling = pe.get("sampling") or {}
        table = Table("model", "pass@1", "95% CI", "problems",
                      title=f"held-out production slice (never sent as traffic; sampled T={sampling.get('temperature')}, "
                            f"n={sampling.get('n')})")
        for name in ("base", "v1", "v2"):
            if name in pe:
                table.add_row(name, _f(pe[name]["pass_at_1"]), _ci(pe[name]["ci95"]), str(pe[name]["n_problems"]))
        if "delta_v2_v1" in pe:
            d = pe["delta_v2_v1"]
            table.add_row("[bold]v2 − v1[/bold]", _f(d["mean"]), _ci(d["ci95"]), str(d["n_problems"]))
        console.print(table)
    ok = self.failure is None and pe is not None and improved(pe)
    if pe is None:
        console.print("[red]the retrain was NOT measured on the held-out production slice: no improvement is "
                      "claimed[/red]" + (f" ({self.failure})" if self.failure else ""))
    elif ok:
        console.print("[bold green]the retrain measurably learned from production: the 95% CI of v2 − v1 lies "
                      "above zero[/bold green]")
    else:
        console.print("[bold red]the retrain did NOT measurably beat v1 on the held-out production slice "
                      "(95% CI of v2 − v1 includes or lies below zero)[/bold red]")

    figures = self.outcomes.figures()
    sent = sum(s.sent for s in self.load_stats)
    answered = sum(s.answered for s in self.load_stats)
    errors = sum(s.errors for s in self.load_stats)
    traffic = {"requests": sent, "answered": answered, "errors": errors, **figures}
    tt = Table("version", "judged", "successes", "success rate",
               title=f"production traffic through the gateway: {sent} requests, {answered} answered, {errors} errors; "
                     f"gateway latency p50 {_ms(figures['gateway_latency_ms']['p50'])}, "
                     f"p99 {_ms(figures['gateway_latency_ms']['p99'])}")
    for version, row in figures["by_version"].items():
        tt.add_row(version if version != "v0" else "v0 (base)", str(row["judged"]), str(row["successes"]),
                   _f(row["successes"] / row["judged"] if row["judged"] else None))
    console.print(tt)
    decisions = []
    for d in self.decisions:
        version = d.version if d.event_type == "adapter.promoted" else d.from_version
        interval = list(d.confidence_interval) if d.confidence_interval is not None else None
        decisions.append({"event": d.event_type, "version": version, "reason": d.reason, "p_value": d.p_value,
                          "confidence_interval": interval, "statistics": d.statistics})
        console.print(f"registry decision: {d.event_type} v{version} ({d.reason})" + (
            f"; always-valid 95% interval of the difference [{interval[0]:+.3f}, {interval[1]:+.3f}], p {d.p_value:.3g}"
            if interval is not None and d.p_value is not None else ""))
    versions = await registry_table(self, js, cfg.adapter_name)
    if self.summary_json is not None:
        data = summary_dict(adapter_name=cfg.adapter_name, versions=versions, production_eval=pe, traffic=traffic,
                            runs=list(self.order), stages=stages, decisions=decisions, improved=ok,
                            failure=self.failure)
        write_json(self.summary_json, data)
        console.print(f"summary JSON: {self.summary_json}")
    elapsed = time.monotonic() - self.t0
    console.print(f"total {elapsed:.0f}s; logs in {self.data_dir / 'logs'}")
    return ok


async def registry_table(self: Any, js: Any, adapter_name: str) -> list[dict[str, Any]]:
    """Print the registry's versions; return them as {version, status, pass_at_1}."""
    from rich.table import Table

    try:
        from lorafleet.services.registry.model import AdapterState
        from lorafleet.services.registry.settings import RegistrySettings

        kv = await js.key_value(RegistrySettings().bucket)
        entry = await kv.get(f"adapter.{adapter_name}")
        state = AdapterState.model_validate_json(entry.value)
    except Exception as exc:
        self.console.print(f"registry: no entry for {adapter_name} ({type(exc).__name__})")
        return []
    table = Table("version", "status", "pass@1", "requests", "successes", "active", title=f"registry: {adapter_name}")
    out = []
    for v in sorted(state.versions.values(), key=lambda v: v.version):
        p1 = ((v.evaluation.metrics or {}).get("adapter") or {}).get("pass@1")
        out.append({"version": v.version, "status": str(v.status), "pass_at_1": p1})
        table.add_row(f"v{v.version}", str(v.status), _f(p1), str(v.metrics.requests), str(v.metrics.successes),
                      "[bold green]active[/bold green]" if state.active == v.version else "")
    self.console.print(table)
    self.console.print(f"active version: {('v' + str(state.active)) if state.active else 'none (the base model serves)'}"
                       + (f"; {_open_test(state.ab)}" if state.ab else ""))
    return out


def _open_test(ab: Any) -> str:
    """An undecided A/B test as the registry holds it: its state and always-valid interval so far."""
    r = ab.running
    interval = f", always-valid 95% interval so far [{r.low:+.3f}, {r.high:+.3f}]" if r.low is not None else ""
    if ab.status == "srm":
        return (f"A/B test of v{ab.candidate} stopped on a sample-ratio mismatch (p {r.srm_p:.3g}): no automatic "
                f"decision{interval}")
    return f"A/B test of v{ab.candidate} still running (undecided{interval})"


def _f(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def _ci(ci: list[float] | None) -> str:
    return "—" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{x:.0f} ms"
