"""`lorafleet registry ...`: inspect versions, promote, roll back, steer A/B tests, retrain status.

Commands talk to the registry's KV bucket directly (no registry process needed)
and publish the resulting events themselves.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from typing import Annotated, Any, Optional

import typer


@asynccontextmanager
async def _open():
    from lorafleet.shared.bus import connect, ensure_stream
    from lorafleet.shared.settings import get_settings

    from .settings import RegistrySettings
    from .store import RegistryStore

    settings = get_settings()
    nc = await connect(settings, name="lorafleet-registry-cli", reconnect_forever=False)
    try:
        js = nc.jetstream()
        await ensure_stream(js, settings)
        yield await RegistryStore.open(js, RegistrySettings(), replicas=settings.stream_replicas,
                                       publish_timeout=settings.publish_timeout_s)
    finally:
        await nc.close()


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _p(p: float | None) -> str:
    return "-" if p is None else f"{p:.3g}"


def _interval(low: float | None, high: float | None) -> str:
    return "-" if low is None or high is None else f"[{low:+.3f}, {high:+.3f}]"


def ab_json(state, summary) -> dict[str, Any]:
    """`registry ab NAME --json` (and `show --json`'s `ab_statistics`): the shape docs/registry.md documents."""
    return {
        "adapter_name": state.name,
        "active": state.active,
        "test": state.ab.model_dump(mode="json") if state.ab is not None else None,
        "statistics": summary.model_dump(mode="json") if summary is not None else None,
    }


def ab_lines(state, summary) -> list[str]:
    """The running test in words: arms, interval, p-values, guardrails, split check, decision."""
    ab = state.ab
    if ab is None or summary is None:
        last = next((h for h in reversed(state.history) if h.action.startswith("ab_") or h.statistics), None)
        tail = f" (last: {last.action} v{last.version}: {last.detail})" if last is not None else ""
        return [f"{state.name}: no A/B test running{tail}"]
    control = f"v{ab.control}" if ab.control is not None else "the base model"
    r = summary
    lines = [
        f"{state.name}: A/B v{ab.candidate} at {ab.traffic:.0%} vs {control} (control), since "
        f"{ab.started_at:%Y-%m-%d %H:%M} UTC, status {ab.status.upper() if ab.status == 'srm' else ab.status}",
        f"  success  candidate {r.candidate_successes}/{r.candidate_n}"
        + (f" = {r.candidate_rate:.3f}" if r.candidate_rate is not None else "")
        + f", control {r.control_successes}/{r.control_n}"
        + (f" = {r.control_rate:.3f}" if r.control_rate is not None else ""),
        f"  difference {'-' if r.difference is None else f'{r.difference:+.3f}'}, "
        f"{1 - r.alpha:.0%} confidence sequence {_interval(r.low, r.high)}"
        + (f" (promotion bound {r.promotion_low:+.3f})" if r.promotion_low is not None and r.low is not None
           and r.promotion_low < r.low - 1e-12 else ""),
        f"  always-valid p: no difference {_p(r.p_value)}, candidate not better {_p(r.p_better)}, "
        f"candidate not worse {_p(r.p_worse)} (alpha {r.alpha}, tau {r.tau}, min {r.min_samples} per arm)",
    ]
    for g in r.guardrails:
        state_word = "TRIPPED" if g.tripped else ("holding promotion" if g.holding else "ok")
        est = "-" if g.estimate is None else (f"{g.estimate:+.3f}" if g.name == "errors" else f"{g.estimate:.3f}")
        lines.append(f"  guardrail {g.name}: {est} in {_interval(g.low, g.high) if g.name == 'errors' else _ratio(g)}"
                     f", limit {g.limit}, p {_p(g.p_value)}: {state_word}")
    if r.srm is not None:
        observed = "-" if r.srm.observed is None else f"{r.srm.observed:.3f}"
        lines.append(f"  split: candidate share {observed} of outcomes, configured {r.srm.traffic:.3f}, "
                     f"always-valid p {_p(r.srm.p_value)}: {'SAMPLE-RATIO MISMATCH' if r.srm.detected else 'ok'}")
    verdict = (f"srm: no automatic decision (fix the split, then `lorafleet registry ab {state.name} --traffic "
               f"{ab.traffic:g}` starts a fresh test, or --stop ends it)") if ab.status == "srm" \
        else f"{r.decision}: {r.reason}"
    lines.append(f"  decision {verdict}")
    return lines


def _ratio(g) -> str:
    return "-" if g.low is None or g.high is None else f"[{g.low:.3f}, {g.high:.3f}]"


def _rate(c) -> str:
    return "-" if c.success_rate is None else f"{c.success_rate:.3f} ({c.successes}/{c.requests})"


async def _state(store, name: str):
    from .core import RegistryError, check_name

    state, _ = await store.get(check_name(name))
    if state is None:
        raise RegistryError(f"unknown adapter {name!r}: nothing is registered under that name (see `lorafleet registry list`)")
    return state


def register(groups: dict[str, typer.Typer]) -> None:
    app = groups["registry"]

    @app.command("list")
    def list_(as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False) -> None:
        """Every adapter: active version, running A/B test, version count."""

        async def run():
            async with _open() as store:
                return await store.all()

        states = asyncio.run(run())
        if as_json:
            _print_json([{"name": s.name, "active": s.active, "ab": s.ab.model_dump(mode="json") if s.ab else None,
                          "versions": sorted(s.versions)} for s in states])
            return
        from rich.console import Console
        from rich.table import Table

        table = Table("adapter", "active", "A/B candidate", "traffic", "versions", "latest status")
        for s in states:
            latest = s.latest()
            table.add_row(s.name, f"v{s.active}" if s.active else "-", (f"v{s.ab.candidate}" + (" (SRM)" if s.ab.status == "srm" else "")) if s.ab else "-",
                          f"{s.ab.traffic:.0%}" if s.ab else "-", str(len(s.versions)),
                          f"v{latest} {s.versions[latest].status}" if latest else "-")
        Console().print(table if states else "no adapters registered yet")

    @app.command()
    def show(name: str, as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False) -> None:
        """One adapter's versions, production metrics and A/B statistics."""
        from .core import ab_summary, show_json
        from .settings import RegistrySettings

        async def run():
            async with _open() as store:
                return await _state(store, name)

        state = asyncio.run(run())
        if as_json:
            _print_json(show_json(state, RegistrySettings()))
            return
        summary = ab_summary(state, RegistrySettings())
        from rich.console import Console
        from rich.table import Table

        table = Table("version", "status", "lora_int_id", "rank", "target modules", "created", "prev",
                      "requests", "success", "latency ms", "gate", title=f"{name}")
        for v in sorted(state.versions.values(), key=lambda v: v.version):
            table.add_row(str(v.version), v.status, str(v.lora_int_id or "-"), str(v.rank), ",".join(v.target_modules),
                          v.created_at.strftime("%Y-%m-%d %H:%M"), str(v.previous_version or "-"),
                          str(v.metrics.requests), _rate(v.metrics),
                          f"{v.metrics.mean_latency_ms:.1f}" if v.metrics.mean_latency_ms is not None else "-",
                          "passed" if v.evaluation.gate_passed else "; ".join(v.reasons))
        console = Console()
        console.print(table)
        if state.base_metrics.requests:
            console.print(f"base model (version 0): {_rate(state.base_metrics)}")
        for line in ab_lines(state, summary):
            console.print(line, highlight=False, markup=False)

    @app.command()
    def history(name: str, as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False) -> None:
        """What happened to an adapter: registrations, A/B tests, promotions, rollbacks."""

        async def run():
            async with _open() as store:
                return await _state(store, name)

        state = asyncio.run(run())
        if as_json:
            _print_json([h.model_dump(mode="json") for h in state.history])
            return
        for h in state.history:
            typer.echo(f"{h.at:%Y-%m-%d %H:%M:%S}  {h.action:<15} {'v' + str(h.version) if h.version else '':<5} {h.detail}")

    @app.command()
    def promote(name: str, version: Annotated[Optional[int], typer.Argument(help="default: the A/B candidate")] = None) -> None:
        """Make VERSION the active version (the current one retires)."""
        from . import core
        from .store import now

        async def run():
            async with _open() as store:
                return await store.apply(name, lambda s: core.promote(s, name, version, now()))

        change = asyncio.run(run())
        event = change.events[0]
        prev = f" (v{event.previous_version} retired)" if event.previous_version else ""
        typer.echo(f"{name}: v{event.version} is active{prev}")

    @app.command()
    def rollback(name: str) -> None:
        """Retire the active version and re-activate the one it replaced (repeat to walk back further)."""
        from . import core
        from .store import now

        async def run():
            async with _open() as store:
                return await store.apply(name, lambda s: core.rollback(s, name, now()))

        event = asyncio.run(run()).events[0]
        typer.echo(f"{name}: rolled back v{event.from_version} → v{event.to_version} is active")

    @app.command()
    def ab(
        name: str,
        traffic: Annotated[Optional[float], typer.Option(help="share of requests for the candidate, 0..1")] = None,
        version: Annotated[Optional[int], typer.Option(help="candidate to test (default: running / latest candidate)")] = None,
        stop: Annotated[bool, typer.Option("--stop", help="end the running test; the candidate stays a candidate")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
    ) -> None:
        """Show the A/B test (interval, always-valid p-values, guardrails, split check); or start one,
        change its traffic share (restarts a test stopped by a sample-ratio mismatch), or stop it."""
        from . import core
        from .settings import RegistrySettings
        from .store import now

        settings = RegistrySettings()
        fn = None
        if stop:
            fn = lambda s: core.stop_ab(s, name, now())  # noqa: E731
        elif traffic is not None or version is not None:
            share = traffic if traffic is not None else settings.ab_traffic
            fn = lambda s: core.start_ab(s, name, version, share, now(), settings)  # noqa: E731

        async def run():
            async with _open() as store:
                if fn is not None:
                    await store.apply(name, fn)
                return await _state(store, name)

        state = asyncio.run(run())
        summary = core.ab_summary(state, settings)
        if as_json:
            _print_json(ab_json(state, summary))
            return
        if fn is not None and state.ab is not None:
            control = f"v{state.ab.control}" if state.ab.control is not None else "the base model"
            typer.echo(f"{name}: A/B v{state.ab.candidate} gets {state.ab.traffic:.0%} of requests, against {control}")
        for line in ab_lines(state, summary):
            typer.echo(line)

    @app.command("retrain-status")
    def retrain_status(
        name: Annotated[Optional[str], typer.Argument(help="one adapter (default: all)")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
    ) -> None:
        """Production pool size, new entries since the last retrain, next scheduled run, last trigger."""
        from .collector import retrain_status as status_of

        async def run():
            async with _open() as store:
                names = [name] if name else await store.names()
                if name:
                    await _state(store, name)
                return [await status_of(store, n) for n in names]

        rows = asyncio.run(run())
        if as_json:
            _print_json(rows)
            return
        from rich.console import Console
        from rich.table import Table

        table = Table("adapter", "pool", "new since last", "threshold", "next scheduled", "last trigger", "last request")
        for r in rows:
            table.add_row(r["adapter_name"], str(r["pool_size"]), str(r["new_since_last"]), str(r["threshold"]),
                          r["next_scheduled"], r["last_trigger"] or "-", r["last_request_id"] or "-")
        Console().print(table if rows else "no adapters registered yet")
