"""Root commands that run and watch the bus: `up`, `serve`, `status`, `events tail|schema`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from lorafleet.shared.errors import LorafleetError


def register(groups: dict[str, typer.Typer]) -> None:
    root, events = groups["root"], groups["events"]
    root.command("up")(up)
    root.command("serve")(serve)
    root.command("status")(status)
    events.command("tail")(tail)
    events.command("schema")(schema)
    events.command("replay")(replay)


def _setup_logging() -> None:
    level = os.environ.get("LORAFLEET_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s [%(name)s] %(message)s", datefmt="%H:%M:%S")


# --------------------------------------------------------------------------- serve / up


def serve(
    service: Annotated[str, typer.Argument(help="ingest | enrich | trainer | evaluator | registry | gateway | dashboard")],
    port: Annotated[Optional[int], typer.Option(
        "--port", min=0, max=65535, help="HTTP port of a web service (gateway, dashboard); else LORAFLEET_<SERVICE>_PORT")] = None,
) -> None:
    """Run one service replica (start it N times for N replicas: they share one durable consumer)."""
    from lorafleet.fleet import SERVICES, WEB_SERVICES, load_service, run_server
    from lorafleet.shared.settings import get_settings

    if port is not None:
        if service not in WEB_SERVICES:
            raise LorafleetError(f"--port is for the HTTP services ({', '.join(WEB_SERVICES)}), not {service}")
        os.environ[f"LORAFLEET_{service.upper()}_PORT"] = str(port)
    if service in WEB_SERVICES:
        settings = get_settings()
        _setup_logging()
        run_server(service, settings)
        return
    if service not in SERVICES:
        try:
            svc = load_service(service)
        except LorafleetError:
            raise LorafleetError(f"unknown service {service!r}: choose one of {', '.join(SERVICES + WEB_SERVICES)}") from None
    else:
        svc = load_service(service)
    settings = get_settings()
    _setup_logging()
    asyncio.run(svc.run(settings))


def up(
    service: Annotated[Optional[list[str]], typer.Option(
        "--service", "-s", help="run only these services (repeatable; default: all)")] = None,
    scale: Annotated[Optional[list[str]], typer.Option(
        "--scale", help="replicas per service, e.g. --scale evaluator=3 (repeatable)")] = None,
    no_services: Annotated[bool, typer.Option("--no-services", help="only the NATS server, stream and buckets")] = False,
) -> None:
    """Start everything: the embedded nats-server (unless a URL is set), the stream and buckets, every service.

    Ctrl-C stops all of it and leaves no process behind.
    """
    from lorafleet.fleet import SERVICES, WEB_SERVICES
    from lorafleet.shared.settings import get_settings
    from lorafleet.up import Supervisor

    known = SERVICES + WEB_SERVICES
    chosen = list(service or known)
    unknown = [s for s in chosen if s not in known]
    if unknown:
        raise LorafleetError(f"unknown service(s) {', '.join(unknown)}: choose from {', '.join(known)}")
    replicas = {s: 1 for s in chosen}
    for item in scale or []:
        name, _, count = item.partition("=")
        if name not in replicas or not count.isdigit() or int(count) < 1:
            raise LorafleetError(f"bad --scale {item!r}: use SERVICE=N with one of {', '.join(chosen)} and N >= 1")
        replicas[name] = int(count)
    _setup_logging()
    Supervisor(get_settings(), {} if no_services else replicas).run()


# --------------------------------------------------------------------------- status


async def _status(settings: Any) -> dict[str, Any]:
    from nats.js.errors import NotFoundError

    from lorafleet.fleet import SERVICES
    from lorafleet.shared.bus import ADVISORY_STREAM, connect, dlq_subject, resolve_servers
    from lorafleet.shared.events import DLQ_PREFIX, STREAM

    nc = await connect(settings, name="lorafleet-status", reconnect_forever=False)
    try:
        js = nc.jetstream()
        try:
            info = await js.stream_info(STREAM)
        except NotFoundError:
            raise LorafleetError(f"the server at {', '.join(resolve_servers(settings))} has no {STREAM} stream: "
                                 "run `lorafleet up` (or start a service) once to create it") from None
        dlq = (await js.stream_info(STREAM, subjects_filter=f"{DLQ_PREFIX}.>")).state.subjects or {}
        try:
            adv = (await js.stream_info(ADVISORY_STREAM, subjects_filter=">")).state.subjects or {}
        except NotFoundError:
            adv = {}
        # Durable ones only: ephemeral consumers (tails, watchers) come and go.
        consumers = {c.name: c for c in await js.consumers_info(STREAM) if c.config.durable_name}
        names = list(SERVICES) + sorted(set(consumers) - set(SERVICES))
        rows = []
        for name in names:
            c = consumers.get(name)
            rows.append({
                "service": name,
                "consumer": c is not None,
                "pending": c.num_pending if c else None,
                "ack_pending": c.num_ack_pending if c else None,
                "redelivered": c.num_redelivered if c else None,
                "waiting_pulls": c.num_waiting if c else None,
                "dead_letters": dlq.get(dlq_subject(name), 0),
                "max_delivery_advisories": sum(n for s, n in adv.items() if s.rsplit(".", 1)[-1] == name),
            })
        return {
            "servers": resolve_servers(settings),
            "processes": await _processes(settings),
            "stream": {"name": STREAM, "messages": info.state.messages, "bytes": info.state.bytes,
                       "first_seq": info.state.first_seq, "last_seq": info.state.last_seq},
            "services": rows,
        }
    finally:
        await nc.close()


async def _processes(settings: Any) -> list[dict[str, Any]]:
    """The processes of this data directory's `lorafleet up`, each with its metrics URL and /ready answer."""
    import aiohttp

    from lorafleet.up import read_processes

    rows = read_processes(settings.data_dir.resolve())
    timeout = aiohttp.ClientTimeout(total=1.0)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async def ready(row: dict[str, Any]) -> None:
            row["ready"] = None
            if row.get("metrics_url"):
                with contextlib.suppress(Exception):
                    async with http.get(row["metrics_url"].removesuffix("/metrics") + "/ready") as resp:
                        row["ready"] = resp.status == 200

        await asyncio.gather(*(ready(r) for r in rows))
    return rows


def status(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Each service's consumer: pending, ack-pending, redeliveries, waiting pulls; dead-letter counts."""
    from rich.console import Console
    from rich.table import Table

    from lorafleet.shared.settings import get_settings

    report = asyncio.run(_status(get_settings()))
    if as_json:
        print(json.dumps(report, indent=2))
        return
    s = report["stream"]
    console = Console()
    console.print(f"NATS {', '.join(report['servers'])}   stream {s['name']}: {s['messages']} events, "
                  f"{s['bytes'] / 1e6:.1f} MB (seq {s['first_seq']}..{s['last_seq']})")
    table = Table("service", "pending", "in flight", "redeliv.", "pulls", "DLQ", "lost")
    for r in report["services"]:
        if not r["consumer"]:
            table.add_row(r["service"], "[dim]not started[/dim]", "", "", "", str(r["dead_letters"]), "")
            continue
        dead = f"[red]{r['dead_letters']}[/red]" if r["dead_letters"] else "0"
        table.add_row(r["service"], str(r["pending"]), str(r["ack_pending"]), str(r["redelivered"]),
                      str(r["waiting_pulls"]), dead, str(r["max_delivery_advisories"]))
    console.print(table)
    if report["processes"]:
        procs = Table("process", "pid", "ready", "metrics")
        for p in report["processes"]:
            ready = {True: "[green]yes[/green]", False: "[red]no[/red]", None: "?"}[p["ready"]]
            procs.add_row(f"{p['service']}#{p['replica']}", str(p["pid"]), ready, p["metrics_url"] or "")
        console.print(procs)
    console.print("[dim]pending: not yet delivered; in flight: delivered, not acked; pulls: replicas waiting for work; "
                  "DLQ: dead letters (lorafleet.v1.dlq.<service>); lost: max-delivery advisories[/dim]")


# --------------------------------------------------------------------------- events


def schema(
    out: Annotated[Optional[Path], typer.Option("--out", help="directory for one <event_type>.json per event (default: print all)")] = None,
) -> None:
    """The JSON Schema of every event, so non-Python producers (e.g. of production.outcome) can publish."""
    from lorafleet.shared.events import json_schemas

    schemas = json_schemas()
    if out is None:
        print(json.dumps(schemas, indent=2))
        return
    out.mkdir(parents=True, exist_ok=True)
    for event_type, body in schemas.items():
        path = out / f"{event_type}.json"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(body, indent=2) + "\n")
        tmp.replace(path)
    print(f"wrote {len(schemas)} schemas to {out}", file=sys.stderr)


def replay(
    seq: Annotated[int, typer.Argument(min=1, help="stream sequence of the dead letter (`lorafleet events tail --json`, the dashboard's /services)")],
) -> None:
    """Publish a dead letter's original message again, so its service gets it once more."""
    from lorafleet.shared.bus import connect
    from lorafleet.shared.dead_letters import replay as replay_dead_letter
    from lorafleet.shared.settings import get_settings

    async def run() -> tuple[Any, int]:
        settings = get_settings()
        nc = await connect(settings, name="lorafleet-replay", reconnect_forever=False)
        try:
            return await replay_dead_letter(nc.jetstream(), seq, timeout=settings.publish_timeout_s)
        finally:
            await nc.close()

    letter, new_seq = asyncio.run(run())
    print(f"dead letter {seq} ({letter.service}, {letter.reason}) replayed on {letter.subject} as stream sequence {new_seq}")


def tail(
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new events")] = False,
    request: Annotated[Optional[str], typer.Option("--request", "-r", help="only this request_id (correlation id)")] = None,
    last: Annotated[int, typer.Option("--last", "-n", min=0, help="how many past events to show")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="one raw JSON event per line")] = False,
) -> None:
    """The event log, oldest to newest (newest last); dead letters included."""
    from lorafleet.shared.settings import get_settings

    try:
        asyncio.run(_tail(get_settings(), follow, request, last, as_json))
    except KeyboardInterrupt:
        pass


async def _tail(settings: Any, follow: bool, request: str | None, last: int, as_json: bool) -> None:
    from nats.js import api
    from nats.js.errors import NotFoundError
    from rich.console import Console

    from lorafleet.shared.bus import connect
    from lorafleet.shared.events import STREAM, SUBJECT_PREFIX

    console = Console(highlight=False)
    nc = await connect(settings, name="lorafleet-tail")
    try:
        js = nc.jetstream()
        try:
            state = (await js.stream_info(STREAM)).state
        except NotFoundError:
            raise LorafleetError(f"no {STREAM} stream on this server yet: run `lorafleet up` first") from None
        # With a request filter the whole log is scanned (the filter is on the payload); else only the tail.
        start = state.first_seq if request else max(state.first_seq, state.last_seq - last + 1)
        shown: list[tuple[str, bytes]] = []
        if state.messages and state.last_seq >= start:
            sub = await js.subscribe(f"{SUBJECT_PREFIX}.>", ordered_consumer=True, config=api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start))
            try:
                while True:
                    msg = await sub.next_msg(timeout=5)
                    if _matches(msg.data, request):
                        shown.append((msg.subject, msg.data))
                    if msg.metadata.sequence.stream >= state.last_seq:
                        break
            finally:
                await sub.unsubscribe()
        for subject, data in shown[-last:] if last else []:
            _print_event(console, subject, data, as_json)
        if not follow:
            if not shown:
                console.print("[dim]no events" + (f" for request {request}" if request else "") + "[/dim]", style=None)
            return
        sub = await js.subscribe(f"{SUBJECT_PREFIX}.>", ordered_consumer=True, config=api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=state.last_seq + 1))
        async for msg in sub.messages:
            if _matches(msg.data, request):
                _print_event(console, msg.subject, msg.data, as_json)
    finally:
        await nc.close()


def _matches(data: bytes, request: str | None) -> bool:
    if request is None:
        return True
    try:
        body = json.loads(data)
    except ValueError:
        return False
    return isinstance(body, dict) and request in (body.get("request_id"), body.get("event_id"))


_ENVELOPE = {"event_id", "event_type", "schema_version", "occurred_at", "request_id", "config", "config_sha256"}


def _print_event(console: Any, subject: str, data: bytes, as_json: bool) -> None:
    from rich.markup import escape

    from lorafleet.shared.events import DLQ_PREFIX, SUBJECT_PREFIX

    kind = subject.removeprefix(SUBJECT_PREFIX + ".")
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if as_json:
        print(json.dumps({"subject": subject, "event": body if body is not None else data.decode(errors="replace")}), flush=True)
        return
    if not isinstance(body, dict):
        console.print(f"[red]{escape(kind)}[/red] unparsable: {escape(data[:200].decode(errors='replace'))}")
        return
    when = str(body.get("occurred_at") or body.get("dead_lettered_at") or "")[11:19]
    if subject.startswith(DLQ_PREFIX + "."):
        error = str(body.get("error", "")).splitlines()[0][:200] if body.get("error") else ""
        console.print(f"{when} [bold red]{escape(kind)}[/bold red] {body.get('reason')} "
                      f"seq={body.get('stream_seq')} {escape(str(body.get('subject')))}: {escape(error)}")
        return
    color = "red" if kind.endswith(".failed") or kind == "adapter.rejected" else \
        "green" if kind in ("adapter.registered", "adapter.promoted") else "cyan"
    fields = []
    for key, value in body.items():
        if key in _ENVELOPE or value is None or value == [] or value == {}:
            continue
        if isinstance(value, dict):
            value = value.get("uri") or "{…}"
        elif isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, list):
            value = ",".join(map(str, value[:4])) + ("…" if len(value) > 4 else "") if all(
                not isinstance(v, (dict, list)) for v in value) else f"[{len(value)}]"
        fields.append(f"{key}={str(value)[:80]}")
    console.print(f"{when} [bold {color}]{escape(kind):<20}[/bold {color}] [dim]{str(body.get('request_id', ''))[:8]}[/dim] "
                  + escape(" ".join(fields)))
