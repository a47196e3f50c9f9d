"""What each page shows, computed from what the bus holds (pure: data in, JSON-ready dicts out).

An event here is a `Rec`: its stream sequence, its type (from the subject, so
`training.failed` stays `training.failed`) and its parsed JSON body. The I/O
that fetches them lives in reader.py; the HTTP wiring in app.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

from lorafleet.services.registry import abtest
from lorafleet.services.registry.core import ab_summary, show_json
from lorafleet.services.registry.model import BASE_VERSION, AdapterState
from lorafleet.services.registry.settings import RegistrySettings

# The pipeline's stages: which service, the event that starts it, the ones that end it, its failure.
STAGES: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("ingest", "train.requested", ("dataset.ready",), "ingest.failed"),
    ("enrich", "dataset.ready", ("dataset.enriched",), "enrich.failed"),
    ("trainer", "dataset.enriched", ("adapter.trained",), "training.failed"),
    ("evaluator", "adapter.trained", ("adapter.evaluated",), "evaluation.failed"),
    ("registry", "adapter.evaluated", ("adapter.registered", "adapter.rejected"), "registry.failed"),
)
# Subjects a run's overview row needs (training.progress is read separately: there are many).
STAGE_TYPES = sorted({t for s in STAGES for t in (s[1], *s[2], s[3])} | {"eval.shard_requested", "eval.shard_done"})
MAX_SERIES_POINTS = 400


@dataclass(frozen=True)
class Rec:
    seq: int
    type: str
    data: dict[str, Any]

    @property
    def at(self) -> str | None:
        return self.data.get("occurred_at")

    @property
    def request_id(self) -> str | None:
        return self.data.get("request_id")


def _ts(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _seconds(start: str | None, end: str | None) -> float | None:
    a, b = _ts(start), _ts(end)
    return None if a is None or b is None else round((b - a).total_seconds(), 3)


# --------------------------------------------------------------------------- runs


def stage_timeline(events: list[Rec]) -> list[dict[str, Any]]:
    """Per stage: state (waiting | running | done | rejected | failed), start, end, seconds, failures."""
    first: dict[str, Rec] = {}
    failures: dict[str, list[Rec]] = {}
    for e in events:
        first.setdefault(e.type, e)
        if e.type.endswith(".failed"):
            failures.setdefault(e.type, []).append(e)
    shards_total = max((e.data.get("shard_count", 0) for e in events if e.type == "eval.shard_requested"), default=0)
    shards_done = len({e.data.get("shard_index") for e in events if e.type == "eval.shard_done"})
    out = []
    for service, start_type, end_types, failed_type in STAGES:
        start = first.get(start_type)
        end = next((first[t] for t in end_types if t in first), None)
        failed = failures.get(failed_type, [])
        if end is not None:
            state = "rejected" if end.type == "adapter.rejected" else "done"
        elif failed:
            state = "failed"
        elif start is not None:
            state = "running"
        else:
            state = "waiting"
        row: dict[str, Any] = {
            "service": service, "state": state,
            "started_at": start.at if start else None, "ended_at": end.at if end else None,
            "seconds": _seconds(start.at, end.at) if start and end else None,
            "output": end.type if end else None,
            "failures": [{"at": f.at, "error": str(f.data.get("error", ""))[:500], "retriable": f.data.get("retriable")}
                         for f in failed],
        }
        if service == "evaluator" and shards_total:
            row["shards"] = {"done": shards_done, "total": shards_total}
        out.append(row)
    return out


def training_curve(events: list[Rec]) -> dict[str, Any]:
    """training.progress as columns (a redelivered job repeats steps: the last report of a step wins)."""
    by_step: dict[int, dict[str, Any]] = {}
    for e in events:
        if e.type == "training.progress":
            by_step[int(e.data["step"])] = e.data
    steps = sorted(by_step)
    col = lambda key: [by_step[s].get(key) for s in steps]  # noqa: E731
    last = dict(by_step[steps[-1]]) if steps else None
    if last is not None and last.get("loss") is None:  # the final report carries no loss: show the last one seen
        last["loss"] = next((by_step[s]["loss"] for s in reversed(steps) if by_step[s].get("loss") is not None), None)
    return {
        "step": steps, "loss": col("loss"), "eval_loss": col("eval_loss"), "eval_pass_at_1": col("eval_pass_at_1"),
        "learning_rate": col("learning_rate"),
        "total_steps": last.get("total_steps") if last else None,
        "last": {k: last.get(k) for k in ("step", "total_steps", "loss", "tokens_per_second", "eta_seconds")} if last else None,
    }


def run_row(request: Rec, events: list[Rec], progress: Rec | None = None) -> dict[str, Any]:
    """One line of the overview's run list."""
    timeline = stage_timeline([request, *events])
    outcome = next((e for e in events if e.type in ("adapter.registered", "adapter.rejected")), None)
    failed = next((s for s in timeline if s["state"] == "failed"), None)
    if outcome is not None:
        state = "registered" if outcome.type == "adapter.registered" else "rejected"
    elif failed is not None:
        state = f"{failed['service']} failed"
    else:
        running = next((s for s in timeline if s["state"] == "running"), None)
        state = f"{running['service']} running" if running else "queued"
    last_at = max((e.at or "" for e in [request, *events]), default=request.at)
    row = {
        "request_id": request.request_id, "adapter_name": request.data.get("adapter_name"),
        "reason": request.data.get("reason"), "requested_at": request.at, "state": state,
        "version": (outcome.data.get("version") if outcome else None),
        "stages": [{"service": s["service"], "state": s["state"], "seconds": s["seconds"]} for s in timeline],
        "seconds": _seconds(request.at, last_at),
    }
    if progress is not None:
        row["training"] = {"step": progress.data.get("step"), "total_steps": progress.data.get("total_steps")}
    return row


def evaluation_view(evaluated: dict[str, Any] | None, report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The evaluation of a run: from report.json when the artifact store has it, else the event's metrics."""
    if evaluated is None:
        return None
    metrics = (report or {}).get("metrics") or evaluated.get("metrics") or {}
    gate = (report or {}).get("gate", {}).get("criteria") if report else evaluated.get("gate")
    gate_passed = (report or {}).get("gate", {}).get("passed") if report else evaluated.get("gate_passed")
    variants = [v for v in ("base", "adapter", "samples") if isinstance(metrics.get(v), dict)]
    keys = [f"pass@{k}" for k in metrics.get("k", [])] + ["greedy_pass@1", "error_rate", "samples", "problems"]
    scores = [{"metric": key, **{v: metrics[v].get(key) for v in variants}} for key in keys]
    sources = sorted({s for v in variants for s in (metrics[v].get("by_source") or {})})
    by_source = [{"source": s, **{v: ((metrics[v].get("by_source") or {}).get(s) or {}).get("pass@1") for v in variants},
                  "problems": max(((metrics[v].get("by_source") or {}).get(s) or {}).get("problems") or 0 for v in variants)}
                 for s in sources]
    latency = {v: (metrics[v].get("latency") or {}) for v in variants if metrics[v].get("latency")}
    return {
        "adapter_name": evaluated.get("adapter_name"), "version": evaluated.get("version"),
        "gate_passed": gate_passed, "gate": gate or [], "variants": variants, "scores": scores, "by_source": by_source,
        "delta_pass@1": metrics.get("delta_pass@1"), "delta_greedy_pass@1": metrics.get("delta_greedy_pass@1"),
        "latency": latency, "latency_increase": metrics.get("latency_increase"),
        "source": "report.json" if report else "adapter.evaluated event",
        "report": (evaluated.get("report") or {}).get("uri"),
    }


# --------------------------------------------------------------------------- adapters


def registry_show(state: AdapterState, settings: RegistrySettings) -> dict[str, Any]:
    """Exactly what `lorafleet registry show NAME --json` prints (the same function)."""
    return show_json(state, settings)


def rollback_chain(state: AdapterState) -> list[int]:
    """Active version, then the one a rollback would bring back, and so on."""
    chain: list[int] = []
    v = state.active
    while v is not None and v in state.versions and v not in chain:
        chain.append(v)
        v = state.versions[v].previous_version
    return chain


def version_rows(state: AdapterState) -> list[dict[str, Any]]:
    rows = []
    for v in sorted(state.versions.values(), key=lambda v: v.version, reverse=True):
        m = v.evaluation.metrics or {}
        delta = m.get("delta_pass@1") or {}
        rows.append({
            "version": v.version, "status": v.status, "lora_int_id": v.lora_int_id, "rank": v.rank,
            "target_modules": v.target_modules, "created_at": v.created_at.isoformat(),
            "gate_passed": v.evaluation.gate_passed, "reasons": v.reasons,
            "pass_at_1": (m.get("adapter") or {}).get("pass@1"), "base_pass_at_1": (m.get("base") or {}).get("pass@1"),
            "delta_pass_at_1": delta.get("mean"), "delta_ci": [delta.get("low"), delta.get("high")] if delta else None,
            "delta_confidence": delta.get("confidence"),
            "requests": v.metrics.requests, "successes": v.metrics.successes, "success_rate": v.metrics.success_rate,
            "mean_latency_ms": v.metrics.mean_latency_ms, "request_id": v.request_id,
            "report": v.evaluation.report.uri if v.evaluation.report else None,
        })
    return rows


def _confidence_sequence(s1: int, n1: int, s2: int, n2: int, settings: RegistrySettings) -> tuple[float, float] | None:
    """The registry's always-valid (1 - alpha) confidence sequence for p1 - p2 at this look: the same
    normal-mixture boundary and mixing parameter the A/B decision uses (services/registry/abtest.py)."""
    if not n1 or not n2:
        return None
    diff, var = abtest.rate_difference(s1, n1, s2, n2)
    half = abtest.half_width(var, settings.ab_tau, settings.ab_alpha)
    return max(-1.0, diff - half), min(1.0, diff + half)


def ab_panel(state: AdapterState, settings: RegistrySettings, started: Rec | None, outcomes: Iterable[Rec],
             decision: Rec | None) -> dict[str, Any] | None:
    """The A/B test of an adapter over time: the running test, else the last one that ran.

    This is the one place that reads the A/B statistics: `ab_statistics` is the registry's own summary
    (what `registry show --json` prints); the series is rebuilt from the production.outcome events since
    the test started (cumulative success rates per arm and the interval of their difference).
    """
    if started is None:
        return None
    candidate = int(started.data["candidate_version"])
    control = started.data.get("active_version")
    control_v = BASE_VERSION if control is None else int(control)
    summary = ab_summary(state, settings) if state.ab is not None and state.ab.candidate == candidate else None
    n = {candidate: 0, control_v: 0}
    s = {candidate: 0, control_v: 0}
    points: list[dict[str, Any]] = []
    low, high = -1.0, 1.0  # running intersection: a confidence sequence only narrows (as the registry keeps it)
    for o in outcomes:
        if decision is not None and o.seq > decision.seq:
            break  # after the decision the outcomes belong to the new arrangement, not to this test
        v = o.data.get("version")
        if o.data.get("adapter_name") != state.name or v not in n:
            continue
        n[v] += 1
        s[v] += int(bool(o.data.get("success")))
        ci = _confidence_sequence(s[candidate], n[candidate], s[control_v], n[control_v], settings)
        if ci is not None:
            low, high = max(low, ci[0]), min(high, ci[1])
            ci = (low, high)
        points.append({
            "at": o.at, "candidate_n": n[candidate], "control_n": n[control_v],
            "candidate_rate": s[candidate] / n[candidate] if n[candidate] else None,
            "control_rate": s[control_v] / n[control_v] if n[control_v] else None,
            "diff_low": ci[0] if ci else None, "diff_high": ci[1] if ci else None,
        })
    if len(points) > MAX_SERIES_POINTS:  # keep the last point exact
        stride = math.ceil(len(points) / MAX_SERIES_POINTS)
        points = points[::stride] + ([points[-1]] if (len(points) - 1) % stride else [])
    series = {key: [p[key] for p in points] for key in
              ("at", "candidate_n", "control_n", "candidate_rate", "control_rate", "diff_low", "diff_high")}
    series["outcomes"] = [p["candidate_n"] + p["control_n"] for p in points]
    return {
        "running": summary is not None,
        "candidate": candidate, "control": control, "traffic": (state.ab.traffic if summary is not None and state.ab
                                                                  else started.data.get("traffic")),
        "started_at": started.at, "alpha": settings.ab_alpha, "min_samples": settings.ab_min_samples,
        "ab_statistics": summary.model_dump(mode="json") if summary else None,
        "decision": ({"type": decision.type, "at": decision.at, "reason": decision.data.get("reason"),
                      "statistics": decision.data.get("statistics") or {}} if decision else None),
        "series": series,
        "interval": f"{1 - settings.ab_alpha:.0%} always-valid confidence sequence of the difference "
                    f"(candidate - control; normal mixture, tau {settings.ab_tau:g}: the registry's decision rule)",
    }


def adapter_view(state: AdapterState, settings: RegistrySettings, ab: dict[str, Any] | None,
                 retrain: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": state.name, "active": state.active, "registry": registry_show(state, settings),
        "versions": version_rows(state), "rollback_chain": rollback_chain(state), "ab": ab,
        "history": [h.model_dump(mode="json") for h in reversed(state.history)],
        "base_metrics": state.base_metrics.model_dump(), "retrain": retrain,
    }


def adapter_card(state: AdapterState, settings: RegistrySettings) -> dict[str, Any]:
    """The overview's line for one adapter: active version, A/B candidate with live counts."""
    summary = ab_summary(state, settings)
    active = state.versions.get(state.active) if state.active is not None else None
    latest = state.latest()
    return {
        "name": state.name, "active": state.active, "versions": len(state.versions),
        "latest": latest, "latest_status": state.versions[latest].status if latest else None,
        "active_metrics": active.metrics.model_dump() if active else state.base_metrics.model_dump(),
        "ab": None if state.ab is None else {
            "candidate": state.ab.candidate, "control": state.ab.control, "traffic": state.ab.traffic,
            "started_at": state.ab.started_at.isoformat(),
            "statistics": summary.model_dump() if summary else None,
        },
    }


# --------------------------------------------------------------------------- services


def services_view(stream: dict[str, Any], consumers: list[dict[str, Any]], dlq_counts: dict[str, int],
                  advisories: dict[str, int], dead_letters: list[Rec]) -> dict[str, Any]:
    """The same rows as `lorafleet status --json` (durable consumers), plus the latest dead letters."""
    rows = []
    for c in sorted(consumers, key=lambda c: c["name"]):
        name = c["name"]
        rows.append({
            "service": name, "consumer": True, "pending": c["pending"], "ack_pending": c["ack_pending"],
            "redelivered": c["redelivered"], "waiting_pulls": c["waiting_pulls"],
            "dead_letters": dlq_counts.get(f"lorafleet.v1.dlq.{name}", 0),
            "max_delivery_advisories": sum(n for s, n in advisories.items() if s.rsplit(".", 1)[-1] == name),
        })
    letters = []
    for d in reversed(dead_letters):
        error = str(d.data.get("error") or "")
        lines = [line.strip() for line in error.splitlines() if line.strip()]
        # A traceback says what went wrong on its last line; anything else (a validation error) on its first.
        headline = (lines[-1] if lines[0].startswith("Traceback") else lines[0]) if lines else ""
        letters.append({
            "seq": d.seq, "service": d.data.get("service"), "reason": d.data.get("reason"),
            "error": headline[:300], "error_detail": error[:4000], "subject": d.data.get("subject"),
            "stream_seq": d.data.get("stream_seq"), "num_delivered": d.data.get("num_delivered"),
            "request_id": d.data.get("request_id"), "at": d.data.get("dead_lettered_at"),
        })
    return {"stream": stream, "services": rows, "dead_letters": letters}


# --------------------------------------------------------------------------- live feed


def _stats(stats: dict[str, Any]) -> str:
    """A dataset event's counts, briefly (the keys differ by stage: show the numeric ones)."""
    items = [(k, v) for k, v in stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return ", ".join(f"{k} {v:g}" for k, v in items[:4])


def brief(rec: Rec) -> dict[str, Any]:
    """What the live feed sends for one event: enough for a page to decide whether to refresh."""
    d = rec.data
    text = {
        "training.progress": lambda: f"step {d.get('step')}/{d.get('total_steps')}"
                                     + (f" loss {d['loss']:.3f}" if isinstance(d.get("loss"), (int, float)) else ""),
        "production.outcome": lambda: f"v{d.get('version')} {'success' if d.get('success') else 'failure'} "
                                      f"{d.get('latency_ms', 0):.0f} ms",
        "adapter.registered": lambda: f"v{d.get('version')} registered ({d.get('status')})",
        "adapter.rejected": lambda: f"v{d.get('version')} rejected",
        "adapter.promoted": lambda: f"v{d.get('version')} promoted ({d.get('reason')})",
        "adapter.rolled_back": lambda: f"v{d.get('from_version')} rolled back to v{d.get('to_version')}",
        "adapter.ab_started": lambda: f"A/B v{d.get('candidate_version')} at {float(d.get('traffic') or 0):.0%}",
        "train.requested": lambda: f"{d.get('adapter_name')} ({d.get('reason')})",
        "dataset.ready": lambda: _stats(d.get("stats") or {}),
        "dataset.enriched": lambda: _stats(d.get("stats") or {}),
        "adapter.trained": lambda: f"v{d.get('version')} rank {d.get('rank')} on {d.get('base_model')}",
        "eval.shard_requested": lambda: f"shard {int(d.get('shard_index', 0)) + 1}/{d.get('shard_count')}, "
                                        f"{len(d.get('problem_ids') or [])} problems",
        "eval.shard_done": lambda: f"shard {int(d.get('shard_index', 0)) + 1}/{d.get('shard_count')} done",
        "adapter.evaluated": lambda: f"v{d.get('version')} gate {'passed' if d.get('gate_passed') else 'failed'}",
    }.get(rec.type)
    if rec.type.startswith("dlq."):
        summary = f"dead letter ({d.get('reason')}) from {d.get('service')}"
    elif rec.type.endswith(".failed"):
        summary = str(d.get("error", ""))[:120]
    else:
        try:
            summary = text() if text else ""
        except (TypeError, ValueError):
            summary = ""
    return {"seq": rec.seq, "type": rec.type, "request_id": d.get("request_id"),
            "adapter_name": d.get("adapter_name") or d.get("service"), "at": d.get("occurred_at") or d.get("dead_lettered_at"),
            "summary": summary}
