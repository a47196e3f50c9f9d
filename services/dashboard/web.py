"""The dashboard's HTTP side: pages, their JSON twins under /api, the live feed, the actions.

Pages are HTML shells that the browser fills from the JSON API (static/app.js), so a
page and its /api twin can't disagree. Unknown names are 404 pages listing what exists.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import nats.errors
from aiohttp import web

from lorafleet.services.registry.core import RegistryError, check_name
from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.events import EVENTS_BY_TYPE

from . import actions, views
from .live import Hub
from .reader import BusUnavailable, NotFound, Reader

log = logging.getLogger("lorafleet.dashboard")
STATIC = Path(__file__).parent / "static"
PIPELINE_TYPES = sorted(set(views.STAGE_TYPES) | {"training.progress"})
# A run's page reads every event type but the production outcomes (by far the most numerous).
RUN_TYPES = sorted(t for t, cls in EVENTS_BY_TYPE.items() if t not in ("production.outcome", "stage.failed")) + ["dlq.>"]


# --------------------------------------------------------------------------- data (one function per API)


async def overview_data(reader: Reader) -> dict[str, Any]:
    adapters = []
    try:
        store = await reader.registry()
        rs = reader.registry_settings
        adapters = [views.adapter_card(s, rs) for s in await store.all()]
    except NotFound:
        pass
    runs = await runs_data(reader)
    try:
        services = await services_data(reader)
    except NotFound:
        services = None
    return {"adapters": adapters, "runs": runs, "services": services}


async def runs_data(reader: Reader) -> list[dict[str, Any]]:
    requests = (await reader.events(["train.requested"]))[-reader.dash.runs:]
    if not requests:
        return []
    wanted = {r.request_id for r in requests}
    by_request: dict[str, list[views.Rec]] = {rid: [] for rid in wanted}
    for e in await reader.events(views.STAGE_TYPES, start_seq=requests[0].seq):
        if e.request_id in wanted and e.type != "train.requested":
            by_request[e.request_id].append(e)
    progress: dict[str, views.Rec] = {}
    for e in await reader.events(["training.progress"], start_seq=requests[0].seq):
        if e.request_id in wanted:
            progress[e.request_id] = e
    rows = [views.run_row(r, by_request[r.request_id], progress.get(r.request_id)) for r in requests]
    return list(reversed(rows))


async def run_data(reader: Reader, request_id: str) -> dict[str, Any]:
    requests = [r for r in await reader.events(["train.requested"]) if r.request_id == request_id]
    if not requests:
        raise NotFound(f"no pipeline run {request_id!r}")
    request = requests[0]
    events = [e for e in await reader.events(RUN_TYPES, start_seq=request.seq) if e.request_id == request_id]
    pipeline = [e for e in events if e.type in PIPELINE_TYPES or e.type.endswith(".failed")]
    evaluated = next((e.data for e in events if e.type == "adapter.evaluated"), None)
    report = None
    if evaluated and evaluated.get("report"):
        ref = evaluated["report"]
        path = await reader.report(ref["uri"], ref["sha256"])
        if path is not None:
            report = json.loads((path / "report.json").read_text())
    listed = [views.brief(e) for e in events if e.type != "training.progress"]
    return {
        "request_id": request_id, "adapter_name": request.data.get("adapter_name"), "reason": request.data.get("reason"),
        "requested_at": request.at, "config": request.data.get("config"),
        "row": views.run_row(request, [e for e in pipeline if e.seq != request.seq]),
        "stages": views.stage_timeline(pipeline),
        "training": views.training_curve(events),
        "evaluation": views.evaluation_view(evaluated, report),
        "report_url": f"/runs/{quote(request_id)}/report/report.html" if report else None,
        "events": listed, "progress_events": sum(e.type == "training.progress" for e in events),
    }


async def adapter_data(reader: Reader, name: str) -> dict[str, Any]:
    store = await reader.registry()
    state, _ = await store.get(check_name(name))
    if state is None:
        raise NotFound(f"no adapter {name!r} in the registry")
    return views.adapter_view(state, reader.registry_settings, await ab_data(reader, state), await reader.retrain(name))


async def ab_data(reader: Reader, state) -> dict[str, Any] | None:
    """The A/B panel's reads: where the last test started, the outcomes since, its decision."""
    started = [e for e in await reader.events(["adapter.ab_started"]) if e.data.get("adapter_name") == state.name]
    if not started:
        return None
    # A traffic change re-announces the same candidate: the test began at its first announcement.
    last = started[-1]
    first = next(e for e in started if e.data.get("candidate_version") == last.data.get("candidate_version")
                 and e.data.get("active_version") == last.data.get("active_version"))
    decisions = [e for e in await reader.events(["adapter.promoted", "adapter.rolled_back"], start_seq=first.seq)
                 if e.data.get("adapter_name") == state.name]
    cand = last.data.get("candidate_version")
    decision = next((d for d in decisions if cand in (d.data.get("version"), d.data.get("from_version"))), None)
    # A decided test's outcomes end at its decision: later traffic is not read at all.
    outcomes = await reader.events(["production.outcome"], start_seq=first.seq,
                                   until_seq=decision.seq if decision else None)
    # The test's start is the first announcement; its traffic share the latest one.
    started = views.Rec(first.seq, first.type, {**first.data, "traffic": last.data.get("traffic")})
    return views.ab_panel(state, reader.registry_settings, started, outcomes, decision)


async def services_data(reader: Reader) -> dict[str, Any]:
    raw = await reader.services()
    letters = (await reader.events(["dlq.>"]))[-reader.dash.dead_letters:]
    data = views.services_view(raw["stream"], raw["consumers"], raw["dlq_counts"], raw["advisories"], letters)
    data["servers"] = raw["servers"]
    if reader.history is not None:
        data["history"] = reader.history.series()
    return data


async def names(reader: Reader) -> list[str]:
    try:
        return await (await reader.registry()).names()
    except (NotFound, BusUnavailable):
        return []


# --------------------------------------------------------------------------- HTTP


def create_app(reader: Reader, token: str | None) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=64 * 1024)
    hub = Hub(reader)
    app["reader"], app["hub"], app["token"] = reader, hub, token

    async def on_startup(app: web.Application) -> None:
        await hub.start()

    app.on_startup.append(on_startup)
    r = app.router
    r.add_get("/", page("overview", "Fleet overview"))
    r.add_get("/services", page("services", "Services"))
    r.add_get("/adapters/{name}", adapter_page)
    r.add_get("/runs/{rid}", run_page)
    r.add_get("/runs/{rid}/report/{path:.*}", report_file)
    r.add_get("/api/health", health)
    r.add_get("/api/overview", api(lambda req: overview_data(req.app["reader"])))
    r.add_get("/api/runs", api(lambda req: runs_data(req.app["reader"])))
    r.add_get("/api/runs/{rid}", api(lambda req: run_data(req.app["reader"], req.match_info["rid"])))
    r.add_get("/api/adapters", api(lambda req: _adapters(req.app["reader"])))
    r.add_get("/api/adapters/{name}", api(lambda req: adapter_data(req.app["reader"], req.match_info["name"])))
    r.add_get("/api/services", api(lambda req: services_data(req.app["reader"])))
    r.add_get("/api/stream", hub.stream)
    r.add_post("/api/actions/{kind}", action)
    r.add_static("/static/", STATIC)
    return app


async def _adapters(reader: Reader) -> list[dict[str, Any]]:
    store = await reader.registry()
    return [views.adapter_card(s, reader.registry_settings) for s in await store.all()]


@web.middleware
async def _errors(request: web.Request, handler):
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except BusUnavailable as exc:
        return _json({"error": str(exc), "bus": "unreachable"}, 503, headers={"Retry-After": "2"})
    except NotFound as exc:
        return _json({"error": str(exc)}, 404)
    except (nats.errors.Error, TimeoutError, ConnectionError) as exc:  # the bus went away mid-request
        reader: Reader = request.app["reader"]
        return _json({"error": f"NATS did not answer ({type(exc).__name__}: {exc}); "
                               f"{'reconnecting' if not reader.connected else 'try again'}",
                      "bus": "unreachable" if not reader.connected else "slow"}, 503, headers={"Retry-After": "2"})
    except Exception as exc:  # a bug must cost one response, never the process
        log.exception("%s %s failed", request.method, request.path)
        return _json({"error": f"{type(exc).__name__}: {exc}"}, 500)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(data, default=str), status=status, content_type="application/json",
                        headers=headers)


def api(fn):
    async def handler(request: web.Request) -> web.Response:
        return _json(await fn(request))

    return handler


async def health(request: web.Request) -> web.Response:
    reader: Reader = request.app["reader"]
    return _json({**reader.status(), "actions": request.app["token"] is not None})


def page(kind: str, title: str, **data: str):
    async def handler(request: web.Request) -> web.Response:
        return _html(_shell(request, kind, title, data))

    return handler


async def adapter_page(request: web.Request) -> web.Response:
    reader: Reader = request.app["reader"]
    name = request.match_info["name"]
    try:
        check_name(name)
        known = await names(reader)
    except RegistryError:
        known = await names(reader)
        return _not_found(request, f"{name!r} is not an adapter name", "adapters", known)
    if reader.connected and name not in known:
        return _not_found(request, f"no adapter called {name!r} in the registry", "adapters", known)
    return _html(_shell(request, "adapter", name, {"name": name}))


async def run_page(request: web.Request) -> web.Response:
    reader: Reader = request.app["reader"]
    rid = request.match_info["rid"]
    if reader.connected:
        try:
            runs = await runs_data(reader)
            requests = {r.request_id for r in await reader.events(["train.requested"])}
        except BusUnavailable:
            requests, runs = None, []
        if requests is not None and rid not in requests:
            return _not_found(request, f"no pipeline run with request id {rid!r}", "runs",
                              [r["request_id"] for r in runs])
    return _html(_shell(request, "run", f"run {rid[:8]}", {"rid": rid}))


async def report_file(request: web.Request) -> web.StreamResponse:
    data = await run_data(request.app["reader"], request.match_info["rid"])
    ev = data["evaluation"]
    if not ev or not data["report_url"]:
        raise web.HTTPNotFound(text="this run has no evaluation report yet")
    reader: Reader = request.app["reader"]
    evaluated = next(e for e in await reader.events(["adapter.evaluated"]) if e.request_id == data["request_id"])
    root = await reader.report(evaluated.data["report"]["uri"], evaluated.data["report"]["sha256"])
    path = (root / request.match_info["path"]).resolve() if root else None
    if root is None or path is None or not path.is_file() or root.resolve() not in path.parents:
        raise web.HTTPNotFound(text="no such file in the report")
    return web.FileResponse(path)


# --------------------------------------------------------------------------- actions


async def action(request: web.Request) -> web.Response:
    """POST /api/actions/<kind>, JSON body, header X-Lorafleet-Token.

    Cross-site requests can't pass: a browser sends neither the custom token header nor a JSON
    content type cross-origin without a CORS preflight, which this server never grants; the
    Origin header, when sent, must be this host."""
    token = request.app["token"]
    if token is None:
        return _json({"error": "the dashboard is read-only: start it with LORAFLEET_DASHBOARD_TOKEN set to enable actions"}, 403)
    origin = request.headers.get("Origin")
    if origin and urlparse(origin).netloc != request.host:
        return _json({"error": f"cross-site request from {origin} refused"}, 403)
    given = request.headers.get("X-Lorafleet-Token", "")
    if not hmac.compare_digest(given.encode(), token.encode()):
        return _json({"error": "missing or wrong token: send it in the X-Lorafleet-Token header"}, 403)
    if request.content_type != "application/json":
        return _json({"error": "send the action as JSON (Content-Type: application/json)"}, 400)
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        return _json({"error": f"the body is not JSON ({exc})"}, 400)
    try:
        act = actions.parse_action(request.match_info["kind"], body)
        result = await actions.apply(act, request.app["reader"])
    except actions.BadAction as exc:
        return _json({"error": str(exc)}, 400)
    except RegistryError as exc:
        status = 404 if "unknown adapter" in str(exc) else 409
        return _json({"error": str(exc)}, status)
    except LorafleetError as exc:
        return _json({"error": str(exc)}, 409)
    log.info("action %s %s by %s: %s", request.match_info["kind"], body, request.remote, result.get("message"))
    return _json(result)


# --------------------------------------------------------------------------- HTML


def _html(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


NAV = (("overview", "/", "Overview"), ("services", "/services", "Services"))


def _shell(request: web.Request, kind: str, title: str, data: dict[str, str], body: str = "") -> str:
    token_on = request.app["token"] is not None
    attrs = " ".join(f'data-{k}="{html.escape(v)}"' for k, v in data.items())
    nav = "".join(f'<a href="{href}" class="{"on" if k == kind else ""}">{label}</a>' for k, href, label in NAV)
    mode = ('<span id="mode" class="mode act" title="actions need the token">actions enabled</span>' if token_on else
            '<span id="mode" class="mode ro" title="set LORAFLEET_DASHBOARD_TOKEN to enable actions">read-only</span>')
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} · lorafleet</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/vendor/uplot/uPlot.min.css">
<link rel="stylesheet" href="/static/style.css">
</head><body data-page="{kind}" data-actions="{'on' if token_on else 'off'}" {attrs}>
<header><a class="brand" href="/">lora<b>fleet</b></a><nav>{nav}</nav>
<span id="bus" class="bus">connecting…</span>{mode}</header>
<div id="banner" class="banner" hidden></div>
<main id="app">{body or '<p class="muted">loading…</p>'}</main>
<aside id="feed"><h3>Live events</h3><ol id="feed-list"></ol></aside>
<script src="/static/vendor/uplot/uPlot.iife.min.js"></script>
<script src="/static/app.js"></script>
</body></html>"""


def _not_found(request: web.Request, what: str, kind: str, known: list[str]) -> web.Response:
    base = "/adapters/" if kind == "adapters" else "/runs/"
    items = "".join(f'<li><a href="{base}{quote(k)}">{html.escape(k)}</a></li>' for k in known)
    listing = f"<p>{'Adapters' if kind == 'adapters' else 'Recent runs'} that exist:</p><ul class='exists'>{items}</ul>" \
        if known else f"<p class='muted'>There are no {kind} yet.</p>"
    body = f"<section class='card notfound'><h1>Not found</h1><p>{html.escape(what)}.</p>{listing}" \
           f"<p><a href='/'>Back to the overview</a></p></section>"
    return _html(_shell(request, "notfound", "not found", {}, body), status=404)


async def serve(reader: Reader, host: str, port: int, token: str | None, stop: asyncio.Event,
                on_ready=None) -> None:
    """Run the dashboard until `stop` is set."""
    from .reader import QueueHistory

    reader.history = QueueHistory()
    app = create_app(reader, token)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    connecting = asyncio.create_task(reader.keep_connected(stop))
    sampling = asyncio.create_task(reader.history.run(reader, stop)) if reader.history is not None else None
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise LorafleetError(f"the dashboard can't listen on {host}:{port} ({exc.strerror or exc}): "
                                 "pick another with --port or LORAFLEET_DASHBOARD_PORT") from None
        bound = site._server.sockets[0].getsockname()[1] if site._server and site._server.sockets else port
        if on_ready:
            on_ready(host, bound)
        await stop.wait()
    finally:
        stop.set()
        for task in (connecting, sampling):  # a connect attempt in flight must not hold the shutdown
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        # Open live feeds would hold the shutdown for their keep-alive interval.
        for q in list(app["hub"].queues):
            q.put_nowait(("bye", {}))
        await runner.cleanup()
        await reader.close()
