"""`lorafleet demo`: the whole fleet on one machine, from a tiny model to an automatic retrain.

1. builds (or reuses) the cached tiny pretrained base;
2. starts the embedded nats-server and every service (the `lorafleet up`
   supervisor) and a local OpenAI-compatible model server for enrich;
3. publishes train.requested for configs/demo_python_lora.yaml and follows it:
   ingest → enrich → training (live progress) → evaluation → registry;
4. runs the SIMULATED traffic (lorafleet/demo/traffic.py) against the registry's A/B
   routing until it promotes or rolls back, and until the collector's pool
   requests a retrain, which is followed through the same path;
5. prints the summary: stage times, base vs adapter pass@1 with the CI of the
   difference, the gate table, the registry's versions, the report's path.

Every process it starts is in its own process group, dies with it
(PR_SET_PDEATHSIG) and is stopped on exit, Ctrl-C or SIGTERM.
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

from lorafleet.shared.errors import LorafleetError
from lorafleet.demo.dashboard import DemoDashboard
from lorafleet.demo.fleet import ModelServer, _supervisor
from lorafleet.demo.summary import _f, _sim_label, print_summary
from lorafleet.demo.track import RunTrack, kind_of, pass_rates

log = logging.getLogger("lorafleet.demo")

AB_PATIENCE_S = 90.0  # traffic time an A/B test gets before the demo stops waiting for its decision
RETRAIN_PATIENCE_S = 180.0  # after the decision, time for the collector's pool to trigger the retrain
DEMO_ENV = {
    # The demo's A/B test and retrain trigger: small enough to finish in minutes.
    "LORAFLEET_REGISTRY_AB_TRAFFIC": "0.5",
    "LORAFLEET_REGISTRY_AB_MIN_SAMPLES": "60",
    "LORAFLEET_REGISTRY_RETRAIN_POOL_THRESHOLD": "40",
    "LORAFLEET_REGISTRY_RETRAIN_CHECK_INTERVAL_S": "2",
    "LORAFLEET_MAX_DELIVER": "3",
    "LORAFLEET_RETRY_DELAY_S": "1",
}

# --------------------------------------------------------------------------- the run


class Demo:
    def __init__(self, config_path: Path, data_dir: Path, timeout_s: float, console: Any, stay: bool = False) -> None:
        self.config_path, self.data_dir, self.timeout_s, self.console = config_path, data_dir, timeout_s, console
        self.stay = stay
        self.t0 = time.monotonic()
        self.timings: dict[str, float] = {}
        self.runs: dict[str, RunTrack] = {}
        self.order: list[str] = []
        self.decisions: list[Any] = []
        self.ab_started: list[Any] = []
        self.sim_stats: dict[str, list[int]] = {}
        self.sim_sent = 0
        self._registered_at: dict[int, float] = {}
        self._decided_at: dict[int, float] = {}

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
        self.say(f"tiny base model ({cfg.base_model}): building or reusing the cache ...")
        from lorafleet.services.trainer.tiny_model import resolve_base_model

        logs = self.data_dir / "logs"
        logs.mkdir(exist_ok=True)
        # Pretraining prints its loss dicts and progress bars: into the log, not over the demo's lines.
        with open(logs / "tiny-model.log", "a") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
            model_dir = Path(resolve_base_model(cfg.base_model))
        self.timings["tiny model"] = time.monotonic() - t
        self.say(f"tiny base model ready in {self.timings['tiny model']:.1f}s: {model_dir}")
        return cfg, settings, model_dir

    def fresh_start(self) -> None:
        """Each demo tells the whole story again: forget the last run's events, registry and
        artifacts (the demo's own subdirectories only); keep enrich's answer cache."""
        import shutil

        from lorafleet.shared.nats_server import read_embedded_url

        if read_embedded_url(self.data_dir.resolve()):
            raise LorafleetError(f"a demo or `lorafleet up` is already running on {self.data_dir}: stop it first "
                                 "or pass another --data-dir")
        for sub in ("nats", "artifacts", "reports", "logs", "ingest", "trainer", "evaluator"):
            shutil.rmtree(self.data_dir / sub, ignore_errors=True)

    # ---------------------------------------------------------------- main

    def run(self) -> int:
        cfg, settings, model_dir = self.prepare()
        logs = self.data_dir / "logs"
        logs.mkdir(exist_ok=True)
        server = ModelServer(model_dir, logs / "model-server.log", cfg.enrich.model or "tiny-base")
        sup = _supervisor(settings, logs / "services.log")
        dashboard = DemoDashboard(logs / "dashboard.log")
        try:
            t = time.monotonic()
            url = sup.start_server()
            from lorafleet.shared.bus import ensure_infrastructure

            asyncio.run(ensure_infrastructure(settings.model_copy(update={"nats_url": url})))
            sup.check(url)
            self.say(f"[bold]dashboard: {dashboard.start(url)}[/bold] (follow the run, the A/B test and the retrain there)")
            server.start()
            self.timings["startup"] = time.monotonic() - t
            self.say(f"NATS {url}, services {', '.join(c.label for c in sup.children)} "
                     f"(logs: {logs / 'services.log'}), model server {server.url}")
            cfg = cfg.model_copy(update={"enrich": cfg.enrich.model_copy(update={"endpoint": server.url})})
            code = asyncio.run(self.pipeline(settings, url, cfg, sup))
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
            self.say("stopped the services, the model server and NATS")

    async def pipeline(self, settings: Any, url: str, cfg: Any, sup: Any) -> int:
        from nats.js import api

        from lorafleet.services.trainer.follow import make_request
        from lorafleet.shared.bus import connect, publish_event
        from lorafleet.shared.events import SUBJECT_PREFIX, parse_event

        settings = settings.model_copy(update={"nats_url": url})
        nc = await connect(settings, name="lorafleet-demo")
        js = nc.jetstream()
        stop_traffic = asyncio.Event()
        traffic: asyncio.Task | None = None
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
                    self.say(f"[red]timed out after {self.timeout_s:.0f}s[/red]")
                    break
                try:
                    msg = await sub.next_msg(timeout=min(remaining, 2.0))
                except Exception:
                    msg = None
                if msg is not None:
                    try:
                        event = parse_event(msg.subject, msg.data)
                    except ValueError:
                        event = None
                    if event is not None and (getattr(event, "adapter_name", None) or cfg.adapter_name) == cfg.adapter_name:
                        traffic = self.on_event(event, request.request_id, nc, js, settings, stop_traffic, traffic)
                reason = self.finished(request.request_id)
                if reason:
                    self.say(reason)
                    break
            await sub.unsubscribe()
        finally:
            stop_traffic.set()
            if traffic is not None:
                await asyncio.gather(traffic, return_exceptions=True)
            supervise.cancel()
            await asyncio.gather(supervise, return_exceptions=True)
            summary_ok = await self.summary(js, settings, cfg)
            await nc.close()
        return 0 if summary_ok else 1

    async def _supervise(self, sup: Any, url: str) -> None:
        while True:  # restart crashed services, like `lorafleet up`
            sup.check(url)
            await asyncio.sleep(0.5)

    def _retrain_run(self) -> RunTrack | None:
        return next((self.runs[r] for r in self.order if self.runs[r].reason == "retrain"), None)

    def _decision(self, version: int) -> Any:
        return next((d for d in self.decisions
                     if (getattr(d, "version", None) if d.event_type == "adapter.promoted" else d.from_version) == version), None)

    def finished(self, first_request: str) -> str | None:
        """Why the demo can stop now, or None to keep following events."""
        first = self.runs.get(first_request)
        if first is None:
            return None
        if ended := first.ended_early("", "the first adapter was rejected by the gate: no A/B test, no traffic, "
                                            "no retrain"):
            return ended
        reg = first.events.get("adapter.registered")
        if reg is None:
            return None
        now = time.monotonic()
        decided = self._decision(reg.version)
        retrain = self._retrain_run()
        if retrain is None:
            if decided is None and now - self._registered_at.get(reg.version, now) > AB_PATIENCE_S:
                return f"no A/B decision for v{reg.version} within {AB_PATIENCE_S:.0f}s of traffic: stopping"
            if decided is not None and now - self._decided_at.get(reg.version, now) > RETRAIN_PATIENCE_S:
                return f"the collector requested no retrain within {RETRAIN_PATIENCE_S:.0f}s: stopping"
            return None
        if ended := retrain.ended_early("retrain: ", "the retrained adapter was rejected by the gate; the active "
                                                      "version stays"):
            return ended
        reg2 = retrain.events.get("adapter.registered")
        if reg2 is None:
            return None
        # More simulated traffic would only refill the pool and trigger retrain after retrain.
        return (f"the retrained v{reg2.version} is registered and its A/B test against the active version "
                "is left running for real traffic: the demo stops here")

    def on_event(self, event: Any, first_request: str, nc: Any, js: Any, settings: Any,
                 stop_traffic: asyncio.Event, traffic: asyncio.Task | None) -> asyncio.Task | None:
        t = kind_of(event)
        if t == "train.requested":
            if event.request_id not in self.runs:
                self.runs[event.request_id] = RunTrack(event.request_id, event.reason)
                self.order.append(event.request_id)
                if event.reason == "retrain":
                    self.say(f"[bold magenta]train.requested (reason=retrain)[/bold magenta] by the collector "
                             f"(extra sources: {', '.join(s.type for s in event.extra_sources) or 'none'})")
                    stop_traffic.set()  # the A/B test is decided; let the retrain have the CPU
        run = self.runs.get(event.request_id)
        if run is not None:
            run.add(event)
            label = "retrain " if run.reason == "retrain" else ""
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
            elif t == "train.requested":
                pass
        if t == "adapter.ab_started":
            self.ab_started.append(event)
            self.say(f"[bold]A/B test[/bold] v{event.candidate_version} vs "
                     f"{'v' + str(event.active_version) if event.active_version else 'the base model'} "
                     f"({event.traffic:.0%} of traffic to the candidate)")
            if self._retrain_run() is not None:
                return traffic  # the story ends at the retrain's registration (see finished())
            rates = self._measured_rates()
            self.say(f"[bold cyan]{_sim_label()}[/bold cyan]: success drawn from each arm's measured pass@1 "
                     f"({', '.join(f'v{v}={p:.2f}' for v, p in sorted(rates.items()))})")
            stop_traffic.clear()
            if traffic is None or traffic.done():
                traffic = asyncio.create_task(self._traffic(nc, js, settings, event.adapter_name, rates, stop_traffic))
        elif t in ("adapter.promoted", "adapter.rolled_back"):
            self.decisions.append(event)
            self._decided_at[event.version if t == "adapter.promoted" else event.from_version] = time.monotonic()
            stats = {k: v for k, v in event.statistics.items() if isinstance(v, (int, float))}
            word = "promoted" if t == "adapter.promoted" else "rolled back"
            version = getattr(event, "version", None) or getattr(event, "from_version", None)
            self.say(f"[bold green]adapter.{word}[/bold green] v{version}: {event.reason} "
                     f"{json.dumps(stats)[:200]}")
        return traffic

    def _measured_rates(self) -> dict[int, float]:
        rates: dict[int, float] = {}
        for run in self.runs.values():
            ev = run.events.get("adapter.evaluated")
            if ev is None:
                continue
            r = pass_rates(ev)
            if r["base"] is not None:
                rates.setdefault(0, r["base"])
            if r["adapter"] is not None:
                rates[ev.version] = r["adapter"]
        return rates

    async def _traffic(self, nc: Any, js: Any, settings: Any, adapter: str, rates: dict[int, float],
                       stop: asyncio.Event) -> None:
        from lorafleet.demo.traffic import TrafficSimulator

        sim = TrafficSimulator(nc, js, adapter, rates, run_id=f"demo{len(self.ab_started)}", seed=len(self.ab_started),
                               publish_timeout_s=settings.publish_timeout_s)
        try:
            await sim.run(stop, max_requests=5000)
        finally:
            self.sim_sent += sim.sent
            for arm, (n, s) in sim.by_arm.items():
                acc = self.sim_stats.setdefault(arm, [0, 0])
                acc[0] += n
                acc[1] += s
            self.say(f"{_sim_label()} stopped after {sim.sent} requests")

    # ---------------------------------------------------------------- summary

    async def summary(self, js: Any, settings: Any, cfg: Any) -> bool:
        return await print_summary(self, js, settings, cfg)


def run_demo(config: Path, data_dir: Path, timeout_s: float, stay: bool = False) -> int:
    from rich.console import Console

    console = Console(highlight=False)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s [%(name)s] %(message)s")

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # the same clean stop as Ctrl-C

    previous = signal.signal(signal.SIGTERM, on_term)
    started = datetime.now().strftime("%H:%M:%S")
    console.rule(f"[bold]lorafleet demo[/bold] ({started}, config {config}, data {data_dir})")
    try:
        return Demo(config, data_dir, timeout_s, console, stay=stay).run()
    finally:
        signal.signal(signal.SIGTERM, previous)
