"""The dashboard in a real browser (Debian's chromium through Playwright) over a real pipeline run.

Every service runs as its own process on a real nats-server; a tiny run goes through ingest →
enrich → training → evaluation → registry while its page is open (its training.progress must show
within 2 s); a later version's evaluation is published and A/B tested on production outcomes. Each
page loads without console errors and shows the numbers of `lorafleet registry show --json` and
of the evaluation's report.json; a new production.outcome shows within 2 s; an action without the
token changes nothing, with it the registry shows the change; a lost bus is announced and
recovered. The test writes docs/img/dashboard-*.png (docs/dashboard.md shows them).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

from lorafleet.services.trainer.follow import make_request
from lorafleet.shared.artifacts import open_store
from lorafleet.shared.bus import connect, ensure_stream, publish_event
from lorafleet.shared.config import parse_config
from lorafleet.shared.events import AdapterTrained
from lorafleet.shared.settings import Settings

from e2e_support import tiny_pipeline_config

sys.path.insert(0, str(Path(__file__).parents[1] / "integration" / "dashboard"))
from dashkit import CHROMIUM_ARGS, DashboardProcess, chromium, cli_json, register_version, send_outcomes  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
TOKEN = "e2e-dashboard-token"
IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
LIVE_S = 2.0  # the bound: a new event shows on an open page within 2 s
SERVICES = ("ingest", "enrich", "trainer", "evaluator", "registry")


def num(text: str) -> float:
    return float(text.strip().split()[0])


class Browser:
    """One chromium page; console errors of every page visited are collected."""

    def __init__(self, page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"{page.url}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"{page.url}: {e}"))

    async def open(self, url: str) -> None:
        self.errors_before = len(self.errors)
        await self.page.goto(url)
        await self.page.wait_for_selector("#app[data-loaded]", timeout=20_000)
        await self.page.wait_for_selector("#bus.ok", timeout=20_000)

    async def text(self, selector: str) -> str:
        return (await self.page.text_content(selector, timeout=10_000)) or ""

    async def until(self, js: str, timeout: float) -> float:
        """Seconds until the JS expression is true in the page (polled every 20 ms), or raise."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if await self.page.evaluate(js):
                return time.monotonic() - t0
            await asyncio.sleep(0.02)
        raise AssertionError(f"{js} not true within {timeout}s on {self.page.url}")

    async def shot(self, name: str) -> None:
        IMG.mkdir(parents=True, exist_ok=True)
        tmp = IMG / f".{name}.tmp.png"
        await self.page.wait_for_timeout(400)  # plots settle
        await self.page.screenshot(path=str(tmp), full_page=True)
        tmp.replace(IMG / f"{name}.png")


async def test_dashboard_follows_a_real_run_an_ab_test_and_actions_in_a_browser(nats_server, nats_url, tmp_path, fleet, events):
    from playwright.async_api import async_playwright

    fleet.env.update({"LORAFLEET_REGISTRY_AB_MIN_SAMPLES": "40", "LORAFLEET_REGISTRY_AB_TRAFFIC": "0.5",
                      "LORAFLEET_REGISTRY_OUTCOME_LINGER_MS": "2"})
    for s in SERVICES:
        fleet.start(s)
    dash = DashboardProcess(nats_url, tmp_path / "dashboard.log", TOKEN)
    readonly = DashboardProcess(nats_url, tmp_path / "dashboard-ro.log")
    settings = Settings(nats_url=nats_url, data_dir=tmp_path / "data")
    nc = await connect(settings)
    js = nc.jetstream()
    await ensure_stream(js, settings)
    progress_at: list[tuple[float, int]] = []

    async def on_progress(msg) -> None:
        progress_at.append((time.monotonic(), json.loads(msg.data)["step"]))

    await nc.subscribe("lorafleet.v1.training.progress", cb=on_progress)
    try:
        base, ro_base = await dash.ready(), await readonly.ready()
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
            b = Browser(await browser.new_page(viewport={"width": 1440, "height": 900}))

            # ---- a real run, its page open before training starts
            request = make_request(parse_config(tiny_pipeline_config("python-lora"), "<e2e>"))
            await publish_event(js, request)
            rid = request.request_id
            await b.open(f"{base}/runs/{rid}")
            deadline = time.monotonic() + 300
            while not progress_at:
                await asyncio.sleep(0.01)
                failed = [t for t in events.types() if t.endswith(".failed") or t.startswith("dlq.")]
                assert not failed and time.monotonic() < deadline, f"no training progress ({failed})\n{fleet.logs()}"
            first_at = progress_at[0][0]
            await b.until("!!document.querySelector('[data-testid=train-step]')", 30)
            training_lag = time.monotonic() - first_at
            assert training_lag <= LIVE_S, f"training.progress showed {training_lag:.2f}s after it was published"

            await events.wait("adapter.evaluated", timeout=300, fleet=fleet)
            t_evaluated = time.monotonic()
            outcome_type = await _registry_outcome(events)
            trained = AdapterTrained.model_validate(events.of("adapter.trained")[0])
            await b.open(f"{base}/runs/{rid}")
            await b.until("!!document.querySelector('#report-link')", 20)

            # The run page shows the evaluation report's numbers and the training curve.
            evaluated = events.of("adapter.evaluated")[0]
            report_dir = await open_store(settings, js).get_dir(evaluated["report"]["uri"], tmp_path / "report")
            report = json.loads((report_dir / "report.json").read_text())
            m = report["metrics"]
            for variant in ("base", "adapter"):
                for key in ("pass@1", "error_rate"):
                    shown = await b.text(f"[data-testid='score-{key}-{variant}']")
                    assert num(shown) == pytest.approx(m[variant][key], abs=5e-5), (variant, key, shown)
            for part in ("mean", "low", "high"):
                assert num(await b.text(f"[data-testid=delta-{part}]")) == pytest.approx(m["delta_pass@1"][part], abs=5e-5)
            steps = sorted({e["step"] for e in events.of("training.progress")})
            assert (await b.text("[data-testid=train-step] .v")).startswith(f"{steps[-1]}/")
            assert await b.page.locator("#loss-plot canvas").count() == 1
            resp = await b.page.context.request.get(f"{base}/runs/{rid}/report/report.html")
            assert resp.status == 200 and "Evaluation" in await resp.text()
            await b.shot("dashboard-run")

            # ---- a later version passes its gate (its evaluation published here) and is A/B tested on outcomes
            v = trained.version + 1
            await register_version(js, None, tmp_path, "python-lora", v, ref=trained.adapter)
            await events.wait("adapter.ab_started", timeout=60, count=1 + (outcome_type == "adapter.registered"))
            control = 0
            shown = cli_json(nats_url, "registry", "show", "python-lora")
            if shown["ab"]["control"] is not None:
                control = shown["ab"]["control"]
            await send_outcomes(js, "python-lora", {v: 0.8, control: 0.3}, 30, seed=1)
            await b.open(f"{base}/adapters/python-lora")

            # A new outcome shows within 2 s (the live feed; the counters follow the registry's write).
            before = await b.text("[data-testid=ab-candidate] .v")
            t0 = time.monotonic()
            await send_outcomes(js, "python-lora", {v: 1.0}, 1, seed=2, prefix="live")
            feed_lag = await b.until("!!document.querySelector('#feed-list li[data-type=\"production.outcome\"]')", 10)
            assert feed_lag <= LIVE_S, f"production.outcome showed {feed_lag:.2f}s after publishing"
            count_lag = await b.until(f"document.querySelector('[data-testid=ab-candidate] .v').textContent !== '{before}'", 10)
            count_lag = time.monotonic() - t0

            # Actions: without the token the page reports 403 and nothing changes; with it the registry shows it.
            await _settled(nats_url)
            state_before = cli_json(nats_url, "registry", "show", "python-lora")
            await b.page.fill("#traffic", "0.3")
            n = len(b.errors)
            await b.page.click("#set-traffic")
            await b.until("document.querySelector('#action-msg').textContent.startsWith('403')", 10)
            await b.page.wait_for_timeout(200)
            assert all("403" in e for e in b.errors[n:]), b.errors[n:]
            del b.errors[n:]  # the refused request is the one error this step expects
            assert cli_json(nats_url, "registry", "show", "python-lora") == state_before
            await b.page.fill("#token", TOKEN)
            await b.page.dispatch_event("#token", "change")
            await b.page.fill("#traffic", "0.3")
            await b.page.click("#set-traffic")
            await b.until("document.querySelector('#action-msg').classList.contains('ok')", 10)
            assert cli_json(nats_url, "registry", "show", "python-lora")["ab"]["traffic"] == 0.3

            # The page's numbers are the CLI's.
            shown = await _settled(nats_url)
            await b.open(f"{base}/adapters/python-lora")
            stats = shown["ab_statistics"]
            assert await b.text("[data-testid=ab-candidate] .v") == f"{stats['candidate_successes']}/{stats['candidate_n']}"
            assert await b.text("[data-testid=ab-control] .v") == f"{stats['control_successes']}/{stats['control_n']}"
            for version, data in shown["versions"].items():
                assert num(await b.text(f"[data-testid=requests-v{version}]")) == data["metrics"]["requests"]
                p1 = (data["evaluation"]["metrics"].get("adapter") or {}).get("pass@1")
                if p1 is not None:
                    assert num(await b.text(f"[data-testid=pass1-v{version}]")) == pytest.approx(p1, abs=5e-4)
            api = json.loads(await (await b.page.context.request.get(f"{base}/api/adapters/python-lora")).text())
            assert api["registry"] == shown

            # Enough outcomes for the decision; the page shows it without a reload.
            await send_outcomes(js, "python-lora", {v: 0.85, control: 0.25}, 160, seed=3)
            await events.wait("adapter.promoted", timeout=60)
            await b.until("!!document.querySelector('.decision')", 10)
            await b.shot("dashboard-adapter")

            await b.open(f"{base}/")
            assert await b.page.locator(f"tr[data-run='{rid}']").count() == 1
            await b.shot("dashboard-overview")
            await js.publish("lorafleet.v1.adapter.evaluated", b'{"broken": true}')  # one dead letter to show
            for _ in range(300):
                if events.of("dlq.registry"):
                    break
                await asyncio.sleep(0.1)
            await b.open(f"{base}/services")
            await b.until("!!document.querySelector('tr[data-dlq]')", 10)
            await b.page.wait_for_timeout(4500)  # two more samples in the queue plots
            await b.shot("dashboard-services")

            # Read-only: no action controls, and it says why.
            await b.open(f"{ro_base}/adapters/python-lora")
            assert "Read-only" in await b.text("#readonly-note") and await b.page.locator("#set-traffic").count() == 0

            assert not b.errors, b.errors

            # Unknown names: a 404 page that lists what exists (the 404 status is its only console line);
            # the listing stays once the live feed has connected.
            resp = await b.page.goto(f"{base}/adapters/nope-lora")
            await b.page.wait_for_timeout(1500)
            assert resp.status == 404 and await b.page.locator("a[href='/adapters/python-lora']").count() == 1
            resp = await b.page.goto(f"{base}/runs/not-a-run")
            await b.page.wait_for_timeout(1500)
            assert resp.status == 404 and await b.page.locator(f"a[href='/runs/{rid}']").count() == 1, \
                (await b.page.content())[-1500:]
            assert all("404" in e for e in b.errors), b.errors
            b.errors.clear()

            # The bus goes away: the open page says so, and recovers by itself.
            await b.open(f"{base}/")
            nats_server.stop()
            await b.until("!document.querySelector('#banner').hidden && "
                          "document.querySelector('#banner').textContent.includes('unreachable')", 20)
            nats_server.start()
            await b.until("document.querySelector('#banner').hidden", 30)
            assert dash.proc.poll() is None
            # The page's API calls while the bus was away were 503s: the only console lines allowed here.
            assert all("503" in e for e in b.errors), b.errors
            await browser.close()
        print(f"\nlive: training.progress on the run page {training_lag:.2f}s, production.outcome in the feed "
              f"{feed_lag:.2f}s, A/B counter {count_lag:.2f}s after publishing")
    finally:
        await nc.close()
        dash.stop()
        readonly.stop()


async def _registry_outcome(events) -> str:
    for _ in range(600):
        for t in ("adapter.registered", "adapter.rejected"):
            if events.of(t):
                return t
        await asyncio.sleep(0.1)
    raise AssertionError("the registry neither registered nor rejected the run's adapter")


async def _settled(nats_url: str) -> dict:
    """`registry show --json` once two reads in a row agree (the registry has applied every outcome)."""
    last = None
    for _ in range(30):
        shown = await asyncio.to_thread(cli_json, nats_url, "registry", "show", "python-lora")
        if shown == last:
            return shown
        last = shown
        await asyncio.sleep(0.3)
    return last
