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
            table.add_row(s.name, f"v{s.active}" if s.active else "-", f"v{s.ab.candidate}" if s.ab else "-",
                          f"{s.ab.traffic:.0%}" if s.ab else "-", str(len(s.versions)),
                          f"v{latest} {s.versions[latest].status}" if latest else "-")
        Console().print(table if states else "no adapters registered yet")

    @app.command()
    def show(name: str, as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False) -> None:
        """One adapter's versions, production metrics and A/B statistics."""
        from .core import ab_summary
        from .settings import RegistrySettings

        async def run():
            async with _open() as store:
                return await _state(store, name)

        state = asyncio.run(run())
        summary = ab_summary(state, RegistrySettings())
        if as_json:
            data = state.model_dump(mode="json", exclude={"outbox"})
            data["ab_statistics"] = summary.model_dump() if summary else None
            _print_json(data)
            return
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
        if summary is not None:
            control = f"v{state.ab.control}" if state.ab.control is not None else "base model"
            console.print(f"A/B: v{state.ab.candidate} at {state.ab.traffic:.0%} vs {control}: candidate "
                          f"{summary.candidate_successes}/{summary.candidate_n}, control "
                          f"{summary.control_successes}/{summary.control_n}, p(better)={_p(summary.p_better)}, "
                          f"p(worse)={_p(summary.p_worse)} → {summary.decision} (α={summary.alpha}, "
                          f"min {summary.min_samples} per arm)")

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
    ) -> None:
        """Start an A/B test, change its traffic share, or stop it."""
        from . import core
        from .core import RegistryError
        from .settings import RegistrySettings
        from .store import now

        if stop:
            fn = lambda s: core.stop_ab(s, name, now())  # noqa: E731
        else:
            share = traffic if traffic is not None else RegistrySettings().ab_traffic
            if version is None and traffic is None:
                raise RegistryError("give --traffic SHARE (e.g. 0.2), --version V, or --stop")
            fn = lambda s: core.start_ab(s, name, version, share, now())  # noqa: E731

        async def run():
            async with _open() as store:
                await store.apply(name, fn)
                return await _state(store, name)

        state = asyncio.run(run())
        if state.ab is None:
            typer.echo(f"{name}: no A/B test running")
        else:
            control = f"v{state.ab.control}" if state.ab.control is not None else "the base model"
            typer.echo(f"{name}: A/B v{state.ab.candidate} gets {state.ab.traffic:.0%} of requests, against {control}")

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
