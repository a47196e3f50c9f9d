"""The dashboard's HTTP API against a real nats-server and the real registry service:
actions need the token (403 otherwise, nothing changes), malformed actions are 400s that change
nothing, unknown names are 404s listing what exists, a lost bus is a 503 the dashboard survives,
and a dead letter can be replayed."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from lorafleet.services.registry.settings import RegistrySettings
from lorafleet.services.registry.store import RegistryStore
from lorafleet.shared.artifacts import open_store
from lorafleet.shared.bus import connect, ensure_stream

from dashkit import DashboardProcess, cli_json, get, register_version, send_outcomes, wait_for

pytestmark = pytest.mark.timeout(240)
TOKEN = "s3cret-token"


@pytest.fixture
async def js(settings):
    nc = await connect(settings)
    js = nc.jetstream()
    await ensure_stream(js, settings)
    yield js
    await nc.close()


@pytest.fixture
async def dashboards(nats_url, tmp_path):
    """One dashboard with the token, one read-only."""
    on, ro = DashboardProcess(nats_url, tmp_path / "dash-on.log", TOKEN), DashboardProcess(nats_url, tmp_path / "dash-ro.log")
    try:
        await asyncio.gather(on.ready(), ro.ready())
        yield on, ro
    finally:
        on.stop()
        ro.stop()


async def _registered(js, settings, tmp_path, name="python-lora"):
    await register_version(js, open_store(settings, js), tmp_path, name, 1)
    store = RegistryStore(js, None, RegistrySettings())

    async def has_ab():
        try:
            store.kv = await js.key_value(RegistrySettings().bucket)
        except Exception:
            return None
        state, rev = await store.get(name)
        # Settled: registered, A/B started, and the outbox published (the registry's last write).
        return (state, rev) if state is not None and state.ab is not None and not state.outbox else None

    return store, await wait_for(has_ab, 30, "registration + A/B start")


async def test_actions_need_the_token_are_csrf_safe_and_malformed_ones_change_nothing(
        registry, js, settings, tmp_path, dashboards, nats_url):
    on, ro = dashboards
    store, (state, revision) = await _registered(js, settings, tmp_path)
    async with aiohttp.ClientSession() as s:
        async def post(base, kind, body, headers=None, raw=None):
            kw = {"data": raw, "headers": {"Content-Type": "application/json", **(headers or {})}} if raw is not None \
                else {"json": body, "headers": headers or {}}
            async with s.post(f"{base}/api/actions/{kind}", **kw) as resp:
                return resp.status, await resp.json()

        refused = [
            (ro.url, "ab", {"adapter": "python-lora", "traffic": 0.3}, {"X-Lorafleet-Token": TOKEN}, None, 403, "read-only"),
            (on.url, "ab", {"adapter": "python-lora", "traffic": 0.3}, {}, None, 403, "token"),
            (on.url, "promote", {"adapter": "python-lora"}, {"X-Lorafleet-Token": "wrong"}, None, 403, "token"),
            (on.url, "promote", {"adapter": "python-lora"}, {"X-Lorafleet-Token": TOKEN, "Origin": "http://evil.example"},
             None, 403, "cross-site"),
            (on.url, "ab", {"adapter": "python-lora", "traffic": 7}, {"X-Lorafleet-Token": TOKEN}, None, 400, "traffic"),
            (on.url, "promote", None, {"X-Lorafleet-Token": TOKEN}, "{not json", 400, "not JSON"),
            (on.url, "promote", {"adapter": "python-lora", "version": 1, "now": True}, {"X-Lorafleet-Token": TOKEN}, None,
             400, "now"),
            (on.url, "launch", {"adapter": "python-lora"}, {"X-Lorafleet-Token": TOKEN}, None, 400, "unknown action"),
            (on.url, "promote", {"adapter": "python-lora", "version": 9}, {"X-Lorafleet-Token": TOKEN}, None, 409, "9"),
        ]
        for base, kind, body, headers, raw, status, needle in refused:
            code, out = await post(base, kind, body, headers, raw)
            assert (code, needle.lower() in out["error"].lower()) == (status, True), (kind, body, headers, code, out)
        now, after = await store.get("python-lora")
        assert after == revision and now == state  # not one write

        code, out = await post(on.url, "ab", {"adapter": "python-lora", "traffic": 0.3}, {"X-Lorafleet-Token": TOKEN})
        assert code == 200 and out["traffic"] == 0.3
        assert cli_json(nats_url, "registry", "show", "python-lora")["ab"]["traffic"] == 0.3
        code, out = await post(on.url, "promote", {"adapter": "python-lora"}, {"X-Lorafleet-Token": TOKEN})
        assert code == 200, out
        shown = cli_json(nats_url, "registry", "show", "python-lora")
        assert shown["active"] == 1 and shown["ab"] is None
        # The page's API shows what the CLI shows.
        code, api = await get(s, f"{on.url}/api/adapters/python-lora")
        assert code == 200 and api["registry"] == shown


async def test_unknown_adapter_or_run_is_a_404_that_lists_what_exists(registry, js, settings, tmp_path, dashboards):
    on, _ = dashboards
    await _registered(js, settings, tmp_path)
    async with aiohttp.ClientSession() as s:
        code, page = await get(s, f"{on.url}/adapters/no-such-lora")
        assert code == 404 and "no-such-lora" in page and 'href="/adapters/python-lora"' in page
        code, page = await get(s, f"{on.url}/adapters/bad%20name!")
        assert code == 404 and "python-lora" in page
        code, body = await get(s, f"{on.url}/api/adapters/no-such-lora")
        assert code == 404 and "no-such-lora" in body["error"]
        code, page = await get(s, f"{on.url}/runs/0000-nope")
        assert code == 404 and "no pipeline run" in page
        code, body = await get(s, f"{on.url}/api/runs/0000-nope")
        assert code == 404


async def test_bus_unreachable_is_a_503_and_the_dashboard_reconnects(nats_server, js, dashboards):
    on, _ = dashboards
    async with aiohttp.ClientSession() as s:
        assert (await get(s, f"{on.url}/api/overview"))[0] == 200
        nats_server.stop()
        code, body = await get(s, f"{on.url}/api/overview")
        assert code == 503 and "unreachable" in body["error"]
        code, health = await get(s, f"{on.url}/api/health")
        assert code == 200 and health["connected"] is False
        code, page = await get(s, f"{on.url}/")
        assert code == 200 and "<main" in page  # the page loads and says so itself (browser test)
        await asyncio.sleep(3)
        assert on.proc.poll() is None
        nats_server.start()

        async def back():
            return (await get(s, f"{on.url}/api/overview"))[0] == 200

        await wait_for(back, 30, "dashboard reconnected")


async def test_a_dead_letter_is_listed_and_replayed(registry, js, settings, dashboards, nats_url):
    on, _ = dashboards
    await js.publish("lorafleet.v1.adapter.evaluated", b'{"not": "an event"}')
    async with aiohttp.ClientSession() as s:
        async def listed():  # settled: the letter is listed, counted, and the original message acked
            code, body = await get(s, f"{on.url}/api/services")
            row = next((r for r in body["services"] if r["service"] == "registry"), {}) if code == 200 else {}
            return body if body["dead_letters"] and row.get("dead_letters") == 1 and row.get("ack_pending") == 0 else None

        services = await wait_for(listed, 30, "dead letter listed")
        letter = services["dead_letters"][0]
        assert letter["service"] == "registry" and letter["reason"] == "invalid"
        row = next(r for r in services["services"] if r["service"] == "registry")
        status = next(r for r in cli_json(nats_url, "status")["services"] if r["service"] == "registry")
        # waiting_pulls flickers between a replica's pull requests; the rest is settled here.
        assert {**row, "waiting_pulls": None} == {**status, "waiting_pulls": None} and row["dead_letters"] == 1
        async with s.post(f"{on.url}/api/actions/replay", json={"seq": letter["seq"]},
                          headers={"X-Lorafleet-Token": TOKEN}) as resp:
            out = await resp.json()
            assert resp.status == 200 and out["subject"] == "lorafleet.v1.adapter.evaluated", out

        async def second():  # the replayed copy reached the registry again (and is still invalid)
            code, body = await get(s, f"{on.url}/api/services")
            return len(body["dead_letters"]) == 2

        await wait_for(second, 30, "replayed message dead-lettered again")


async def test_nats_down_at_start_the_dashboard_serves_says_so_and_connects_when_it_comes(tmp_path):
    from lorafleet.shared.nats_server import NatsServer, free_port

    port = free_port()
    dash = DashboardProcess(f"nats://127.0.0.1:{port}", tmp_path / "dash.log")
    server = NatsServer(store_dir=tmp_path / "nats", port=port)
    try:
        await dash.ready()
        async with aiohttp.ClientSession() as s:
            code, health = await get(s, f"{dash.url}/api/health")
            assert code == 200 and health["connected"] is False and str(port) in health["servers"][0]
            code, body = await get(s, f"{dash.url}/api/overview")
            assert code == 503 and "unreachable" in body["error"]
            server.start()

            async def connected():
                return (await get(s, f"{dash.url}/api/health"))[1]["connected"]

            await wait_for(connected, 30, "dashboard connected to the late server")
        dash.proc.send_signal(__import__("signal").SIGTERM)
        assert dash.proc.wait(timeout=20) == 0  # and it stops promptly
    finally:
        dash.stop()
        server.stop()


async def test_retrain_promote_and_rollback_actions(registry, js, settings, tmp_path, dashboards, nats_url):
    on, _ = dashboards
    store, _ = await _registered(js, settings, tmp_path)
    headers = {"X-Lorafleet-Token": TOKEN}
    async with aiohttp.ClientSession() as s:
        async def post(kind, body):
            async with s.post(f"{on.url}/api/actions/{kind}", json=body, headers=headers) as resp:
                return resp.status, await resp.json()

        # No active version yet: a retrain has no config to start from, and says how to give one.
        code, out = await post("retrain", {"adapter": "python-lora"})
        assert code == 409 and "LORAFLEET_REGISTRY_RETRAIN_CONFIGS" in out["error"]
        assert (await post("promote", {"adapter": "python-lora", "version": 1}))[0] == 200
        code, out = await post("rollback", {"adapter": "python-lora"})
        assert code == 409 and "no predecessor" in out["error"]
        code, out = await post("retrain", {"adapter": "python-lora"})
        assert code == 200, out
        sub = await js.subscribe("lorafleet.v1.train.requested", ordered_consumer=True)
        request = __import__("json").loads((await sub.next_msg(timeout=5)).data)
        await sub.unsubscribe()
        assert request["request_id"] == out["request_id"] and request["adapter_name"] == "python-lora"
        # Version 2 registers and becomes the A/B candidate; promoting it makes v1 its rollback target.
        await register_version(js, open_store(settings, js), tmp_path, "python-lora", 2)

        async def candidate():
            state, _ = await store.get("python-lora")
            return state.ab is not None and state.ab.candidate == 2 and not state.outbox

        await wait_for(candidate, 30, "v2 under A/B test")
        assert (await post("promote", {"adapter": "python-lora"}))[0] == 200
        code, out = await post("rollback", {"adapter": "python-lora"})
        assert code == 200 and out["version"] == 1
        shown = cli_json(nats_url, "registry", "show", "python-lora")
        assert shown["active"] == 1 and shown["versions"]["2"]["status"] == "retired"
        code, page = await get(s, f"{on.url}/api/adapters/python-lora")
        assert page["rollback_chain"] == [1] and page["registry"] == shown
