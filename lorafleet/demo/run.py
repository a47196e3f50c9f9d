"""`lorafleet demo`: the whole fleet on one machine, from the shipped tiny base to a retrain
that measurably learned from production.

1. the pretrained tiny base ships with the package (sha256-checked; built and cached only
   when the recipe changed);
2. starts the embedded nats-server, every service (the `lorafleet up` supervisor) with the
   gateway, and a local OpenAI-compatible model server: enrich's endpoint and the gateway's
   inference backend;
3. publishes train.requested for configs/demo_python_lora.yaml and follows it:
   ingest → enrich → training → evaluation → gate → registry (v1, A/B against the base);
4. production: the load generator (lorafleet/demo/load.py) sends real requests through the
   gateway with the openai client, one route key per simulated user, each with its problem's
   tests, on a distribution wider than v1's training set (lorafleet/demo/production.py).
   The version the A/B router picks answers, the sandbox judges it, the registry counts it
   and the collector pools the verified successes;
5. the collector's pool triggers the retrain (not the demo): the same path gives v2, which is
   A/B-tested against v1 on live traffic and decided by the registry's test;
6. measures pass@1 of base, v1 and v2 on the held-out production slice (never sent as
   traffic) with 95% CIs and v2 − v1 with its CI; the demo succeeds only when that CI lies
   above zero. Summary on the console and, with --summary-json, as JSON.

Every process it starts is in its own process group, dies with it (PR_SET_PDEATHSIG) and
is stopped on exit, Ctrl-C or SIGTERM. A backend that dies during traffic stops the demo
with a non-zero exit and no improvement claimed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from lorafleet.demo.fleet import (ModelServer, _free_port, _supervisor, gateway_env, gateway_url,
                                  wait_healthy)
from lorafleet.demo.summary import _f, print_summary
from lorafleet.demo.track import OutcomeTally, RunTrack, kind_of, pass_rates
from lorafleet.shared.errors import LorafleetError
from lorafleet.demo.dashboard import DemoDashboard

log = logging.getLogger("lorafleet.demo")

AB_PATIENCE_S = 180.0  # traffic time an A/B test gets before the demo stops waiting for its decision
RETRAIN_PATIENCE_S = 480.0  # traffic time for the collector's pool to trigger the retrain (40 verified successes)
DEMO_ENV = {
    # The demo's A/B test and retrain trigger: small enough to finish in minutes.
    "LORAFLEET_REGISTRY_AB_TRAFFIC": "0.5",
    "LORAFLEET_REGISTRY_AB_MIN_SAMPLES": "40",
    "LORAFLEET_REGISTRY_RETRAIN_POOL_THRESHOLD": "40",
    "LORAFLEET_REGISTRY_RETRAIN_CHECK_INTERVAL_S": "2",
    "LORAFLEET_REGISTRY_REQUIRE_TESTS": "true",  # only answers the sandbox judged become training data
    "LORAFLEET_MAX_DELIVER": "3",
    "LORAFLEET_RETRY_DELAY_S": "1",
}


class Demo:
    def __init__(self, config_path: Path, data_dir: Path, timeout_s: float, console: Any,
                 summary_json: Path | None = None, stay: bool = False, ab_patience_s: float = AB_PATIENCE_S,
                 retrain_patience_s: float = RETRAIN_PATIENCE_S) -> None:
        self.config_path, self.data_dir, self.timeout_s, self.console = config_path, data_dir, timeout_s, console
        self.summary_json, self.stay = summary_json, stay
        self.ab_patience_s, self.retrain_patience_s = ab_patience_s, retrain_patience_s
        self.t0 = time.monotonic()
        self.timings: dict[str, float] = {}
        self.runs: dict[str, RunTrack] = {}
        self.order: list[str] = []
        self.decisions: list[Any] = []
        self.ab_started: list[Any] = []
        self.outcomes = OutcomeTally()
        self.load_stats: list[Any] = []  # LoadStats of each traffic phase
        self.production_eval: dict[str, Any] | None = None
        self.failure: str | None = None  # why the demo stopped short (then it fails)
        self._registered_at: dict[int, float] = {}
        self._decided_at: dict[int, float] = {}
        self._traffic_since: float | None = None

    def say(self, text: str) -> None:
        self.console.print(f"[dim]{time.monotonic() - self.t0:6.1f}s[/dim]  {text}")

    # ---------------------------------------------------------------- setup

    def prepare(self) -> tuple[Any, Any, Path]:
        from lorafleet.shared.config import load_config
        from lorafleet.shared.settings import get_settings

        cfg = load_config(self.config_path)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.fresh_start()
        for key, value in DEMO_ENV.items():
            os.environ.setdefault(key, value)
        os.environ["LORAFLEET_DATA_DIR"] = str(self.data_dir.resolve())
        os.environ.pop("LORAFLEET_NATS_URL", None)
        os.environ["LORAFLEET_EMBEDDED_PORT"] = "0"  # never collide with a `lorafleet up` already running
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        settings = get_settings()

        t = time.monotonic()
        from lorafleet.services.trainer.tiny_model import resolve_base_model

        logs = self.data_dir / "logs"
        logs.mkdir(exist_ok=True)
        # A build (recipe changed) prints loss dicts: into the log, not over the demo's lines.
        with open(logs / "tiny-model.log", "a") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
            model_dir = Path(resolve_base_model(cfg.base_model))
        self.timings["tiny model"] = time.monotonic() - t
        self.say(f"tiny base model ({cfg.base_model}) ready in {self.timings['tiny model']:.1f}s: {model_dir}")
        return cfg, settings, model_dir

    def fresh_start(self) -> None:
        """Each demo tells the whole story again: forget the last run's events, registry and
        artifacts (the demo's own subdirectories only); keep enrich's answer cache."""
        import shutil

        from lorafleet.shared.nats_server import read_embedded_url

        if read_embedded_url(self.data_dir.resolve()):
            raise LorafleetError(f"a demo or `lorafleet up` is already running on {self.data_dir}: stop it first "
                                 "or pass another --data-dir")
        for sub in ("nats", "artifacts", "reports", "logs", "ingest", "trainer", "evaluator", "gateway", "measure"):
            shutil.rmtree(self.data_dir / sub, ignore_errors=True)

    # ---------------------------------------------------------------- main

    def run(self) -> int:
        cfg, settings, model_dir = self.prepare()
        logs = self.data_dir / "logs"
        server = ModelServer(model_dir, logs / "model-server.log", cfg.enrich.model or "tiny-base")
        sup = _supervisor(settings, logs / "services.log")
        dashboard = DemoDashboard(logs / "dashboard.log")
        port = _free_port()
        try:
            t = time.monotonic()
            server.start()
            os.environ.update(gateway_env(server.url, port))  # the supervisor's children inherit it
            url = sup.start_server()
            from lorafleet.shared.bus import ensure_infrastructure

            asyncio.run(ensure_infrastructure(settings.model_copy(update={"nats_url": url})))
            sup.check(url)
            self.say(f"[bold]dashboard: {dashboard.start(url)}[/bold] (follow the run, the A/B test and the retrain there)")
            self.gateway = gateway_url(port)
            wait_healthy(self.gateway, "gateway", 120.0, alive=lambda: server.exit_code() is None)
            self.timings["startup"] = time.monotonic() - t
            self.say(f"NATS {url}, services {', '.join(c.label for c in sup.children)} "
                     f"(logs: {logs / 'services.log'}), model server {server.url}, gateway {self.gateway}")
            cfg = cfg.model_copy(update={"enrich": cfg.enrich.model_copy(update={"endpoint": server.url})})
            code = asyncio.run(self.pipeline(settings, url, cfg, sup, server, model_dir))
            if self.stay:
                dashboard.stay(self.say, sup, url)
            return code
        finally:
            dashboard.stop()
            server.stop()
            sup.stop_children()
            if sup.server is not None:
                from lorafleet.shared.nats_server import clear_embedded_url

                sup.server.stop()
                clear_embedded_url(settings.data_dir.resolve())
            self.say("stopped the services, the gateway, the model server and NATS")

    async def pipeline(self, settings: Any, url: str, cfg: Any, sup: Any, server: ModelServer, model_dir: Path) -> int:
        from nats.js import api

        from lorafleet.demo.production import split_production
        from lorafleet.services.trainer.follow import make_request
        from lorafleet.shared.bus import connect, publish_event
        from lorafleet.shared.events import SUBJECT_PREFIX, parse_event

        self.split = split_production()
        self.say(f"production distribution: {len(self.split.traffic)} problems for traffic, "
                 f"{len(self.split.heldout)} held out for measuring "
                 f"({len(self.split.dropped_near_duplicates)} held-out candidates dropped as near-duplicates)")
        settings = settings.model_copy(update={"nats_url": url})
        nc = await connect(settings, name="lorafleet-demo")
        js = nc.jetstream()
        self.traffic = Traffic(self)
        supervise = asyncio.create_task(self._supervise(sup, url))
        try:
            request = make_request(cfg, reason="demo")
            ack = await publish_event(js, request, timeout=settings.publish_timeout_s)
            self.say(f"[bold]train.requested[/bold] {cfg.adapter_name} (request {request.request_id[:8]})")
            sub = await js.subscribe(f"{SUBJECT_PREFIX}.>", ordered_consumer=True, config=api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=ack.seq))
            deadline = time.monotonic() + self.timeout_s  # from here: a first-time model build is not counted
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.failure = f"timed out after {self.timeout_s:.0f}s"
                    self.say(f"[red]{self.failure}[/red]")
                    break
                try:
                    msg = await sub.next_msg(timeout=min(remaining, 1.0))
                except Exception:
                    msg = None
                if msg is not None:
                    try:
                        event = parse_event(msg.subject, msg.data)
                    except ValueError:
                        event = None
                    if event is not None and (getattr(event, "adapter_name", None) or cfg.adapter_name) == cfg.adapter_name:
                        self.on_event(event, cfg)
                if (down := self.backend_down(server)) is not None:
                    self.failure = down
                    self.say(f"[red]{down}: stopping[/red]")
                    break
                reason = self.finished(request.request_id)
                if reason:
                    self.say(reason)
                    break
            await sub.unsubscribe()
            await self.traffic.stop()
            if self.failure is None:
                # The story ends at v2's decision. A retrain the collector requests now (from the outcomes of
                # v2's A/B test) would take the CPU from the measurement (measured: 139 s instead of 16 s):
                # the trainer stops, and the request stays in the stream for the next trainer (--stay).
                supervise.cancel()
                sup.stop_children({"trainer"}, timeout_s=5.0)
                await self.measure(js, settings, model_dir)
        finally:
            await self.traffic.stop()
            supervise.cancel()
            await asyncio.gather(supervise, return_exceptions=True)
            ok = await print_summary(self, js, settings, cfg)
            await nc.close()
        return 0 if ok else 1

    async def _supervise(self, sup: Any, url: str) -> None:
        while True:  # restart crashed services, like `lorafleet up`
            sup.check(url)
            await asyncio.sleep(0.5)

    def backend_down(self, server: ModelServer) -> str | None:
        """The gateway's backend died (its process exited, or the gateway kept failing)."""
        code = server.exit_code()
        if code is not None:
            return f"the gateway's backend (the model server) exited with code {code} during the demo"
        return self.traffic.failed()

    # ---------------------------------------------------------------- following the events

    def _retrain_run(self) -> RunTrack | None:
        return next((self.runs[r] for r in self.order if self.runs[r].reason == "retrain"), None)

    def _decision(self, version: int) -> Any:
        return next((d for d in self.decisions
                     if (d.version if d.event_type == "adapter.promoted" else d.from_version) == version), None)

    def finished(self, first_request: str) -> str | None:
        """Why the demo can stop now, or None to keep following events."""
        first = self.runs.get(first_request)
        if first is None:
            return None
        if ended := first.ended_early("", "the first adapter was rejected by the gate: no A/B test, no traffic, "
                                            "no retrain"):
            self.failure = "the first run did not register an adapter"
            return ended
        if first.events.get("adapter.registered") is None:
            return None
        now = time.monotonic()
        retrain = self._retrain_run()
        if retrain is None:
            if self._traffic_since is not None and now - self._traffic_since > self.retrain_patience_s:
                self.failure = f"the collector requested no retrain within {self.retrain_patience_s:.0f}s of traffic"
                return self.failure
            return None
        if ended := retrain.ended_early("retrain: ", "the retrained adapter was rejected by the gate; the active "
                                                      "version stays"):
            return ended  # still measured: the summary says what v2 is worth
        reg2 = retrain.events.get("adapter.registered")
        if reg2 is None:
            return None
        if self._decision(reg2.version) is not None:
            return f"the registry decided v{reg2.version}'s A/B test on live traffic"
        started = self._registered_at.get(reg2.version, now)
        if now - started > self.ab_patience_s:
            return (f"no A/B decision for v{reg2.version} within {self.ab_patience_s:.0f}s of traffic: stopping (its A/B "
                    "test stays open)")
        return None

    def on_event(self, event: Any, cfg: Any) -> None:
        t = kind_of(event)
        if t == "production.outcome":
            self.outcomes.add(event)
            return
        if t == "train.requested" and event.request_id not in self.runs:
            if event.reason == "retrain" and self._retrain_run() is not None:
                # The pool refilled during v2's A/B test: the story follows the first retrain only;
                # its A/B test keeps the traffic (and the CPU).
                self.say(f"the collector requested another retrain ({event.request_id[:8]}); the demo follows only "
                         "the first one")
                return
            self.runs[event.request_id] = RunTrack(event.request_id, event.reason)
            self.order.append(event.request_id)
            if event.reason == "retrain":
                self.say(f"[bold magenta]train.requested (reason=retrain)[/bold magenta] by the collector after "
                         f"{self.outcomes.judged} judged outcomes, {self.outcomes.successes} successes "
                         f"(extra sources: {', '.join(s.type for s in event.extra_sources) or 'none'})")
                self.traffic.pause("the retrain has the CPU")
        run = self.runs.get(event.request_id)
        if run is not None:
            run.add(event)
            self._say_run_event(t, event, "retrain " if run.reason == "retrain" else "")
        if t == "adapter.ab_started":
            self.ab_started.append(event)
            self.say(f"[bold]A/B test[/bold] v{event.candidate_version} vs "
                     f"{'v' + str(event.active_version) if event.active_version else 'the base model'} "
                     f"({event.traffic:.0%} of traffic to the candidate)")
            if self._traffic_since is None:
                self._traffic_since = time.monotonic()
            self.traffic.start(cfg.adapter_name, self.split.traffic, seed=len(self.ab_started))
        elif t in ("adapter.promoted", "adapter.rolled_back"):
            self.decisions.append(event)
            version = event.version if t == "adapter.promoted" else event.from_version
            self._decided_at[version] = time.monotonic()
            stats = {k: v for k, v in event.statistics.items() if isinstance(v, (int, float, list))}
            word = "promoted" if t == "adapter.promoted" else "rolled back"
            self.say(f"[bold green]adapter.{word}[/bold green] v{version}: {event.reason} {json.dumps(stats)[:240]}")

    def _say_run_event(self, t: str, event: Any, label: str) -> None:
        if t == "training.progress":
            if event.step == event.total_steps or event.step % max(1, event.total_steps // 10) == 0:
                extra = f"  loss {event.loss:.3f}" if event.loss is not None else ""
                extra += f"  pass@1 {event.eval_pass_at_1:.2f}" if event.eval_pass_at_1 is not None else ""
                eta = f"  eta {event.eta_seconds:.0f}s" if event.eta_seconds else ""
                self.say(f"  {label}training step {event.step}/{event.total_steps}{extra}{eta}")
        elif t in ("dataset.ready", "dataset.enriched"):
            stats = {k: v for k, v in event.stats.items() if isinstance(v, (int, float))}
            self.say(f"[bold]{label}{t}[/bold] {json.dumps(stats)[:160]}")
        elif t == "adapter.trained":
            self.say(f"[bold]{label}adapter.trained[/bold] v{event.version} r={event.rank}")
        elif t == "adapter.evaluated":
            r = pass_rates(event)
            self.say(f"[bold]{label}adapter.evaluated[/bold] v{event.version}: base pass@1 {_f(r['base'])} → "
                     f"adapter {_f(r['adapter'])} (Δ {_f(r['delta'])}, 95% CI [{_f(r['delta_low'])}, "
                     f"{_f(r['delta_high'])}]); gate {'[green]passed[/green]' if event.gate_passed else '[yellow]failed[/yellow]'}")
        elif t == "adapter.registered":
            self._registered_at[event.version] = time.monotonic()
            self.say(f"[bold green]{label}adapter.registered[/bold green] v{event.version} "
                     f"(lora_int_id {event.lora_int_id}, {event.status})")
        elif t == "adapter.rejected":
            self.say(f"[bold yellow]{label}adapter.rejected[/bold yellow] v{event.version}: {'; '.join(event.reasons)}")
        elif t.endswith(".failed"):
            self.say(f"[red]{label}{t}[/red]: {event.error[:300]}" + (" (retrying)" if event.retriable else ""))

    # ---------------------------------------------------------------- the held-out production slice

    async def measure(self, js: Any, settings: Any, model_dir: Path) -> None:
        """pass@1 of base, v1 and v2 on the held-out slice (the trained adapters, fetched from the
        artifact store); nothing is measured when either adapter is missing."""
        from lorafleet.demo.measure import measure_slice, slice_report
        from lorafleet.demo.production import MAX_TOKENS, SLICE_SAMPLES, TEMPERATURE
        from lorafleet.shared.artifacts import open_store

        trained = [self.runs[r].events.get("adapter.trained") for r in self.order]
        if len(trained) < 2 or not all(trained[:2]):
            self.say("[yellow]no v1 and v2 adapters to measure on the held-out production slice[/yellow]")
            return
        t = time.monotonic()
        store = open_store(settings, js=js)
        adapters = {}
        for name, ev in zip(("v1", "v2"), trained[:2]):
            dest = self.data_dir / "measure" / name
            await store.get_dir(ev.adapter, dest)
            adapters[name] = dest
        self.say(f"measuring base, v1 and v2 on the {len(self.split.heldout)} held-out production problems ...")
        scores = await measure_slice(model_dir, adapters, self.split.heldout)
        self.production_eval = {**slice_report(scores),
                                "sampling": {"temperature": TEMPERATURE, "n": SLICE_SAMPLES, "max_tokens": MAX_TOKENS}}
        self.timings["production eval"] = time.monotonic() - t


class Traffic:
    """The load generator's task: started on an A/B test, paused while the retrain trains."""

    def __init__(self, demo: Demo) -> None:
        self.demo = demo
        self.task: asyncio.Task | None = None
        self.stop_event = asyncio.Event()
        self.error: BaseException | None = None

    def start(self, adapter_name: str, problems: list, seed: int) -> None:
        from lorafleet.demo.load import LoadGenerator

        if self.task is not None and not self.task.done():
            return
        self.stop_event = asyncio.Event()
        gen = LoadGenerator(self.demo.gateway, adapter_name, problems, seed=seed)
        self.demo.load_stats.append(gen.stats)
        self.demo.say(f"[bold cyan]traffic[/bold cyan] through the gateway ({self.demo.gateway}): "
                      f"{gen.users} users, {gen.concurrency} in flight, every request with its tests")
        self.task = asyncio.create_task(gen.run(self.stop_event))

    def pause(self, why: str) -> None:
        if self.task is not None and not self.task.done():
            self.stop_event.set()
            self.demo.say(f"traffic paused: {why}")

    def failed(self) -> str | None:
        if self.task is not None and self.task.done() and not self.task.cancelled() and self.task.exception():
            return str(self.task.exception())
        return None

    async def stop(self) -> None:
        self.stop_event.set()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)


def run_demo(config: Path, data_dir: Path, timeout_s: float, summary_json: Path | None = None,
             stay: bool = False, ab_patience_s: float = AB_PATIENCE_S, retrain_patience_s: float = RETRAIN_PATIENCE_S) -> int:
    from rich.console import Console

    console = Console(highlight=False)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s [%(name)s] %(message)s")

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # the same clean stop as Ctrl-C

    previous = signal.signal(signal.SIGTERM, on_term)
    started = datetime.now().strftime("%H:%M:%S")
    console.rule(f"[bold]lorafleet demo[/bold] ({started}, config {config}, data {data_dir})")
    try:
        return Demo(config, data_dir, timeout_s, console, summary_json, stay=stay, ab_patience_s=ab_patience_s,
                    retrain_patience_s=retrain_patience_s).run()
    finally:
        signal.signal(signal.SIGTERM, previous)
