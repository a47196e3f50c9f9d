"""Following a pipeline run from its events: the stages, how each ended, the pass rates (pure: no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# (stage, the event that starts it, the events that end it)
STAGES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("ingest", "train.requested", ("dataset.ready", "ingest.failed")),
    ("enrich", "dataset.ready", ("dataset.enriched", "enrich.failed")),
    ("training", "dataset.enriched", ("adapter.trained", "training.failed")),
    ("evaluation", "adapter.trained", ("adapter.evaluated", "evaluation.failed")),
    ("registry", "adapter.evaluated", ("adapter.registered", "adapter.rejected", "registry.failed")),
)
FAILED = {end for _, _, ends in STAGES for end in ends if end.endswith(".failed")}


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



def percentile(xs: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no data."""
    if not xs:
        return None
    s = sorted(xs)
    rank = max(1, min(len(s), -(-len(s) * q // 100)))  # ceil(q/100 * n), at least 1
    return s[int(rank) - 1]


@dataclass
class OutcomeTally:
    """The judged production outcomes of the demo's adapter, as the gateway published them."""

    judged: int = 0
    successes: int = 0
    serving_errors: int = 0  # outcomes with error=true: serving failed, nothing was judged
    by_version: dict[int, list[int]] = field(default_factory=dict)  # version -> [judged, successes]
    latency_ms: list[float] = field(default_factory=list)  # the gateway's serving time per request
    seen: set[str] = field(default_factory=set)

    def add(self, outcome: Any) -> None:
        if outcome.event_id in self.seen:  # a redelivered outcome counts once, as in the registry
            return
        self.seen.add(outcome.event_id)
        if outcome.error:
            self.serving_errors += 1
            return
        self.judged += 1
        self.successes += int(outcome.success)
        row = self.by_version.setdefault(outcome.version, [0, 0])
        row[0] += 1
        row[1] += int(outcome.success)
        self.latency_ms.append(outcome.latency_ms)

    def figures(self) -> dict[str, Any]:
        return {
            "judged": self.judged,
            "successes": self.successes,
            "serving_errors": self.serving_errors,
            "by_version": {f"v{v}": {"judged": n, "successes": s} for v, (n, s) in sorted(self.by_version.items())},
            "gateway_latency_ms": {"p50": percentile(self.latency_ms, 50), "p99": percentile(self.latency_ms, 99)},
        }
