"""The registry's domain model: one `AdapterState` document per adapter name.

All versions of a name live in one KV entry, so every state change of a name
(register, A/B start, outcome counters, promotion, rollback) is one
compare-and-set write: the "exactly one active version" invariant can't be torn
by a crash between two writes. Events produced by a change ride in `outbox` in
the same write and are published afterwards (Nats-Msg-Id = event_id), so a
crash after the write still publishes them exactly once.

Outcome version 0 means "served by the base model, no adapter" (the control
arm of the first version's A/B test).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lorafleet.shared.events import EVENTS_BY_TYPE, ArtifactRef, Event, GateCriterion

from .abtest import Running

Status = Literal["candidate", "ab_testing", "active", "retired", "rejected"]
BASE_VERSION = 0
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
HISTORY_LIMIT = 500


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Counters(_Model):
    requests: int = 0
    successes: int = 0
    errors: int = Field(0, description="outcomes with error=true (serving failed)")
    latency_ms_sum: float = 0.0
    latency_ms_sq_sum: float = Field(0.0, description="sum of squared latencies: the latency guardrail's variance")
    latency_ms_max: float = 0.0

    def add(self, success: bool, latency_ms: float, error: bool = False) -> None:
        self.requests += 1
        self.successes += int(success)
        self.errors += int(error)
        self.latency_ms_sum += latency_ms
        self.latency_ms_sq_sum += latency_ms * latency_ms
        self.latency_ms_max = max(self.latency_ms_max, latency_ms)

    def minus(self, other: "Counters") -> "Counters":
        return Counters(
            requests=self.requests - other.requests,
            successes=self.successes - other.successes,
            errors=self.errors - other.errors,
            latency_ms_sum=self.latency_ms_sum - other.latency_ms_sum,
            latency_ms_sq_sum=self.latency_ms_sq_sum - other.latency_ms_sq_sum,
            latency_ms_max=self.latency_ms_max,
        )

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.requests if self.requests else None

    @property
    def mean_latency_ms(self) -> float | None:
        return self.latency_ms_sum / self.requests if self.requests else None


class Evaluation(_Model):
    gate_passed: bool
    gate: list[GateCriterion] = Field(default_factory=list)
    metrics: dict[str, Any] = Field(default_factory=dict)
    report: ArtifactRef | None = None


class AdapterInfo(_Model):
    """What the adapter's own adapter_config.json says."""

    rank: int
    lora_alpha: float | None = None
    target_modules: list[str]
    base_model: str | None = None


class Version(_Model):
    name: str
    version: int
    status: Status
    lora_int_id: int | None = Field(None, description="vLLM LoRARequest id; None for rejected versions")
    artifact: ArtifactRef
    rank: int
    lora_alpha: float | None = None
    target_modules: list[str]
    domains: list[str] = Field(default_factory=list)
    base_model: str
    serve_base_model: str | None = None
    created_at: datetime
    previous_version: int | None = Field(None, description="the version that was active when this one was promoted")
    evaluation: Evaluation
    reasons: list[str] = Field(default_factory=list, description="why rejected / retired")
    notes: list[str] = Field(default_factory=list)
    metrics: Counters = Field(default_factory=Counters)
    request_id: str
    source_event_id: str
    train_config: dict[str, Any] | None = None
    trace_context: dict[str, str] | None = Field(
        None, description="traceparent of the run that produced this version: a retrain's trace links to it")


class AbTest(_Model):
    candidate: int
    control: int | None = Field(description="the active version at the start; None = the base model")
    traffic: float = Field(ge=0.0, le=1.0)
    started_at: datetime
    salt: str = Field(description="hash salt: the same request key stays on one arm for this test")
    candidate_baseline: Counters = Field(default_factory=Counters)
    control_baseline: Counters = Field(default_factory=Counters)
    status: Literal["running", "srm"] = Field(
        "running", description="srm: the arms' counts disagree with the traffic share; no more automatic decisions")
    running: Running = Field(default_factory=Running, description="always-valid p-values and interval so far")
    split_from: tuple[int, int] = Field(
        (0, 0), description="(candidate, control) test counts when the traffic share last changed: the SRM segment")


class HistoryEntry(_Model):
    at: datetime
    action: str
    version: int | None = None
    detail: str = ""
    statistics: dict[str, Any] | None = Field(None, description="the A/B result (abtest.AbResult) behind an automatic decision")


class OutboxItem(_Model):
    event_type: str
    data: dict[str, Any]

    def event(self) -> Event:
        cls = EVENTS_BY_TYPE[self.event_type]
        return cls.model_validate(self.data)


class AdapterState(_Model):
    name: str
    versions: dict[int, Version] = Field(default_factory=dict)
    active: int | None = None
    ab: AbTest | None = None
    base_metrics: Counters = Field(default_factory=Counters, description="outcomes served by the base model (version 0)")
    outcome_seq: int = Field(0, description="highest production.outcome stream sequence applied here")
    seq: int = Field(0, description="transition counter: derives event ids")
    history: list[HistoryEntry] = Field(default_factory=list)
    outbox: list[OutboxItem] = Field(default_factory=list)

    def counters(self, version: int | None) -> Counters:
        if version is None or version == BASE_VERSION:
            return self.base_metrics
        return self.versions[version].metrics

    def latest(self) -> int | None:
        return max(self.versions) if self.versions else None

    def status_of(self, version: int) -> Status:
        return self.versions[version].status
