"""`lorafleet demo`: the whole fleet on one machine, from a tiny model to an automatic retrain.

1. builds (or reuses) the cached tiny pretrained base;
2. starts the embedded nats-server and every service (the `lorafleet up`
   supervisor) and a local OpenAI-compatible model server for enrich;
3. publishes train.requested for configs/demo_python_lora.yaml and follows it:
   ingest → enrich → training (live progress) → evaluation → registry;
4. runs the SIMULATED traffic (shared/traffic.py) against the registry's A/B
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
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.processes import stop_groups

log = logging.getLogger("lorafleet.demo")

# (stage, the event that starts it, the events that end it)
STAGES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("ingest", "train.requested", ("dataset.ready", "ingest.failed")),
    ("enrich", "dataset.ready", ("dataset.enriched", "enrich.failed")),
    ("training", "dataset.enriched", ("adapter.trained", "training.failed")),
    ("evaluation", "adapter.trained", ("adapter.evaluated", "evaluation.failed")),
    ("registry", "adapter.evaluated", ("adapter.registered", "adapter.rejected", "registry.failed")),
)
FAILED = {end for _, _, ends in STAGES for end in ends if end.endswith(".failed")}
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


# --------------------------------------------------------------------------- pure parts


def kind_of(event: Any) -> str:
    """The event type, with `<stage>.failed` for a StageFailed (its class-level type is generic)."""
    return getattr(event, "failed_type", None) or event.event_type


@dataclass
class RunTrack:
    """The events of one request (one pass through the pipeline)."""

    request_id: str
    reason: str
    events: dict[str, Any] = field(default_factory=dict)  # event_type -> the first such event
    progress: Any = None

    def add(self, event: Any) -> None:
        if event.event_type == "training.progress":
            self.progress = event
        self.events.setdefault(kind_of(event), event)

    @property
    def done(self) -> bool:
        return any(t in self.events for t in ("adapter.registered", "adapter.rejected")) or self.failed is not None

    @property
    def failed(self) -> Any:
        return next((self.events[t] for t in FAILED if t in self.events), None)

    def ended_early(self, prefix: str, rejected: str) -> str | None:
        """Why this run stopped short (a stage failed: its error; the gate rejected: `rejected`), or None."""
        if self.failed is not None:
            return f"[red]{prefix}{kind_of(self.failed)}: {self.failed.error[:500]}[/red]"
        if "adapter.rejected" in self.events:
            return rejected
        return None


def stage_times(events: dict[str, Any]) -> list[tuple[str, float | None, str]]:
    """(stage, seconds or None, how it ended) from the events' own timestamps."""
    rows = []
    for stage, start, ends in STAGES:
        began = events.get(start)
        end = next((events[e] for e in ends if e in events), None)
        if began is None or end is None:
            rows.append((stage, None, "not reached" if began is None else "running"))
            continue
        rows.append((stage, (end.occurred_at - began.occurred_at).total_seconds(), kind_of(end)))
    return rows


def pass_rates(evaluated: Any) -> dict[str, float | None]:
    """Sampled and greedy pass@1 of base and adapter, and the delta with its 95% CI."""
    m = evaluated.metrics
    delta = m.get("delta_pass@1") or {}
    return {
        "base": (m.get("base") or {}).get("pass@1"),
        "adapter": (m.get("adapter") or {}).get("pass@1"),
        "base_greedy": (m.get("base") or {}).get("greedy_pass@1"),
        "adapter_greedy": (m.get("adapter") or {}).get("greedy_pass@1"),
        "delta": delta.get("mean"),
        "delta_low": delta.get("low"),
        "delta_high": delta.get("high"),
        "problems": m.get("problems"),
    }


def verdict(rates: dict[str, float | None]) -> str:
    low = rates.get("delta_low")
    if rates.get("delta") is None:
        return "no base-vs-adapter comparison was measured"
    if low is not None and low > 0:
        return "the adapter beats the base on held-out problems (95% CI of the difference above 0)"
    return "the adapter did NOT measurably beat the base on held-out problems (95% CI of the difference includes 0)"


# --------------------------------------------------------------------------- processes


def _free_port() -> int:
    from lorafleet.shared.nats_server import free_port

    return free_port()


class ModelServer:
    """`lorafleet model serve` for the tiny base, as the demo's enrich endpoint."""

    def __init__(self, model_dir: Path, log_path: Path, name: str) -> None:
        self.model_dir, self.log_path, self.name = model_dir, log_path, name
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120.0) -> None:
        from lorafleet.shared.cli_up import _die_with_parent

        cmd = [sys.executable, "-c", "from lorafleet.cli import main; main()", "model", "serve", str(self.model_dir),
               "--port", str(self.port), "--name", self.name]
        with open(self.log_path, "ab") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LorafleetError(f"the model server exited with code {self.proc.returncode}: see {self.log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise LorafleetError(f"the model server did not answer on port {self.port} within {timeout:.0f}s: see {self.log_path}")

    def stop(self) -> None:
        stop_groups([self.proc])
        self.proc = None


def _supervisor(settings: Any, log_path: Path):
    """The `lorafleet up` supervisor, with the services' output in a log file instead of the console."""
    from lorafleet.shared import cli_up
    from lorafleet.shared.bus import SERVICES

    class LoggedSupervisor(cli_up.Supervisor):
        def spawn(self, child: Any, url: str) -> None:
            env = dict(os.environ, LORAFLEET_NATS_URL=url, LORAFLEET_DATA_DIR=str(self.settings.data_dir.resolve()),
                       PYTHONUNBUFFERED="1")
            cmd = [sys.executable, "-c", "from lorafleet.cli import main; main()", "serve", child.service]
            with open(log_path, "ab") as fh:
                child.proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                              start_new_session=True, preexec_fn=cli_up._die_with_parent)
            child.starts = [t for t in child.starts if t > time.monotonic() - cli_up.RESTART_WINDOW_S] + [time.monotonic()]

    # Two evaluator replicas share the evaluation's shards (the other services wait on it then).
    return LoggedSupervisor(settings, {s: 2 if s == "evaluator" else 1 for s in SERVICES})


# --------------------------------------------------------------------------- the run


class Demo:
    def __init__(self, config_path: Path, data_dir: Path, timeout_s: float, console: Any) -> None:
        self.config_path, self.data_dir, self.timeout_s, self.console = config_path, data_dir, timeout_s, console
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
        try:
            t = time.monotonic()
            url = sup.start_server()
            from lorafleet.shared.bus import ensure_infrastructure

            asyncio.run(ensure_infrastructure(settings.model_copy(update={"nats_url": url})))
            sup.check(url)
            server.start()
            self.timings["startup"] = time.monotonic() - t
            self.say(f"NATS {url}, services {', '.join(c.label for c in sup.children)} "
                     f"(logs: {logs / 'services.log'}), model server {server.url}")
            cfg = cfg.model_copy(update={"enrich": cfg.enrich.model_copy(update={"endpoint": server.url})})
            return asyncio.run(self.pipeline(settings, url, cfg, sup))
        finally:
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
        from lorafleet.shared.traffic import TrafficSimulator

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
                path = await self._fetch_report(js, settings, ev)
                console.print(f"{name}: report {path}")

        if self.sim_stats:
            sim = Table("arm", "requests", "successes", title=f"{_sim_label()} ({self.sim_sent} requests)")
            for arm, (n, s) in sorted(self.sim_stats.items()):
                sim.add_row(arm, str(n), str(s))
            console.print(sim)
        for d in self.decisions:
            console.print(f"registry decision: {d.event_type} ({d.reason})")
        await self._registry_table(js, cfg.adapter_name)
        elapsed = time.monotonic() - self.t0
        console.print(f"total {elapsed:.0f}s; logs in {self.data_dir / 'logs'}")
        return ok

    async def _fetch_report(self, js: Any, settings: Any, ev: Any) -> Path:
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

    async def _registry_table(self, js: Any, adapter_name: str) -> None:
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
    from lorafleet.shared.traffic import LABEL

    return LABEL


def run_demo(config: Path, data_dir: Path, timeout_s: float) -> int:
    from rich.console import Console

    console = Console(highlight=False)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s [%(name)s] %(message)s")

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # the same clean stop as Ctrl-C

    previous = signal.signal(signal.SIGTERM, on_term)
    started = datetime.now().strftime("%H:%M:%S")
    console.rule(f"[bold]lorafleet demo[/bold] ({started}, config {config}, data {data_dir})")
    try:
        return Demo(config, data_dir, timeout_s, console).run()
    finally:
        signal.signal(signal.SIGTERM, previous)
