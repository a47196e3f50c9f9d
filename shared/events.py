"""Every event on the bus, one pydantic model each, and its subject.

Subjects are `lorafleet.v1.<event_type>`; all of them live in one JetStream
stream (STREAM). Events carry references (artifact URIs + sha256), never
payloads: nothing here may serialise above MAX_EVENT_BYTES.

Event ids of outcome events are derived from the input event (`derive_id`), so a
redelivered job that finishes twice publishes the same id twice and JetStream's
`Nats-Msg-Id` dedup records it once.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

SCHEMA_VERSION = 1
STREAM = "LORAFLEET"
SUBJECT_PREFIX = "lorafleet.v1"
DLQ_PREFIX = f"{SUBJECT_PREFIX}.dlq"  # lorafleet.v1.dlq.<service>
# Core NATS request-reply; outside `lorafleet.v1.>` on purpose: the stream would store every
# request and JetStream would answer it with a PubAck before the registry does.
ROUTE_SUBJECT = "lorafleet.rpc.v1.registry.route"
MAX_EVENT_BYTES = 1024 * 1024

# uuid5 namespace for ids derived from other ids (stable across processes).
_ID_NAMESPACE = uuid.UUID("5b0c6f0e-8d7e-4f51-9a55-6c6f72616674")


def derive_id(*parts: object) -> str:
    """A deterministic event id from the input event's id and what this output is."""
    return str(uuid.uuid5(_ID_NAMESPACE, "/".join(str(p) for p in parts)))


def subject_for(event_type: str) -> str:
    return f"{SUBJECT_PREFIX}.{event_type}"


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Event(BaseModel):
    """The envelope every event shares."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_type: ClassVar[str]
    event_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    schema_version: Literal[1] = SCHEMA_VERSION
    occurred_at: datetime = Field(default_factory=_now)
    request_id: str = Field(description="Correlation id: the train.requested that started this chain.")

    @classmethod
    def subject(cls) -> str:
        return subject_for(cls.event_type)

    def follow(self, cls: type[E], index: int = 0, **fields: Any) -> E:
        """The outcome event `cls` of this input: same request_id, derived event_id."""
        return cls(
            event_id=derive_id(self.event_id, cls.event_type, index),
            request_id=self.request_id,
            **fields,
        )

    def to_bytes(self) -> bytes:
        data = self.model_dump_json().encode()
        if len(data) > MAX_EVENT_BYTES:
            raise ValueError(
                f"{self.event_type} event is {len(data)} bytes, above the {MAX_EVENT_BYTES}-byte limit: "
                "put the payload in the artifact store and send its URI"
            )
        return data


E = TypeVar("E", bound=Event)


class ArtifactRef(BaseModel):
    """Where an artifact lives (artifact store URI) and its content hash."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    uri: str
    sha256: str
    size_bytes: int | None = None


class SourceSpec(BaseModel):
    """One data source of a training request (see the trainer config's `data`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str = Field(description="codecontests | apps | taco | livecodebench | humaneval | lorafleet | production")
    path: str | None = None
    hub_name: str | None = None
    split: str | None = None
    limit: int | None = None


# --------------------------------------------------------------------------- flow


class TrainRequested(Event):
    event_type: ClassVar[str] = "train.requested"
    adapter_name: str
    config: dict[str, Any] = Field(description="The parsed training config (TrainConfig.model_dump()).")
    config_sha256: str
    reason: Literal["manual", "retrain", "demo"] = "manual"
    extra_sources: list[SourceSpec] = Field(default_factory=list, description="e.g. the production pool on retrain")


class _DatasetEvent(Event):
    """A dataset artifact on its way to the trainer, with the config that asked for it."""

    adapter_name: str
    dataset: ArtifactRef
    stats: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any]
    config_sha256: str


class DatasetReady(_DatasetEvent):
    event_type: ClassVar[str] = "dataset.ready"


class DatasetEnriched(_DatasetEvent):
    event_type: ClassVar[str] = "dataset.enriched"


class TrainingProgress(Event):
    event_type: ClassVar[str] = "training.progress"
    adapter_name: str
    step: int
    total_steps: int
    loss: float | None = None
    learning_rate: float | None = None
    tokens_per_second: float | None = None
    eta_seconds: float | None = None
    eval_loss: float | None = None
    eval_pass_at_1: float | None = None


class AdapterTrained(Event):
    event_type: ClassVar[str] = "adapter.trained"
    adapter_name: str
    version: int
    adapter: ArtifactRef
    base_model: str
    serve_base_model: str | None = None
    rank: int
    lora_alpha: float | None = None
    target_modules: list[str]
    domains: list[str] = Field(default_factory=list)
    metrics: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any]
    config_sha256: str
    dataset_sha256: str
    eval_problems: ArtifactRef | None = Field(default=None, description="eval_problems.jsonl of the dataset")


class GateCriterion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    measured: float | None
    threshold: float
    comparison: Literal[">=", ">", "<=", "<"]
    passed: bool


class AdapterEvaluated(Event):
    event_type: ClassVar[str] = "adapter.evaluated"
    adapter_name: str
    version: int
    adapter: ArtifactRef
    base_model: str
    serve_base_model: str | None = None
    rank: int
    target_modules: list[str]
    domains: list[str] = Field(default_factory=list)
    gate_passed: bool
    gate: list[GateCriterion]
    metrics: dict[str, Any] = Field(default_factory=dict, description="pass@k base/adapter, delta + CI, latency, error rate")
    report: ArtifactRef | None = None


class EvalShardRequested(Event):
    """A work item: evaluate problems [start, stop) of one evaluation (shared by evaluator replicas)."""

    event_type: ClassVar[str] = "eval.shard_requested"
    evaluation_id: str
    shard_index: int
    shard_count: int
    problem_ids: list[str]
    spec: ArtifactRef = Field(description="The evaluation spec (adapter, problems, sampling) in the artifact store")


class EvalShardDone(Event):
    event_type: ClassVar[str] = "eval.shard_done"
    evaluation_id: str
    shard_index: int
    shard_count: int
    result: ArtifactRef


class AdapterRegistered(Event):
    event_type: ClassVar[str] = "adapter.registered"
    adapter_name: str
    version: int
    lora_int_id: int
    status: str


class AdapterRejected(Event):
    event_type: ClassVar[str] = "adapter.rejected"
    adapter_name: str
    version: int
    reasons: list[str]


class AdapterAbStarted(Event):
    event_type: ClassVar[str] = "adapter.ab_started"
    adapter_name: str
    candidate_version: int
    active_version: int | None
    traffic: float = Field(ge=0.0, le=1.0)


class AdapterPromoted(Event):
    event_type: ClassVar[str] = "adapter.promoted"
    adapter_name: str
    version: int
    previous_version: int | None
    reason: str
    statistics: dict[str, Any] = Field(default_factory=dict)
    # The A/B test's always-valid figures when the decision was automatic (None for a manual promotion).
    p_value: float | None = Field(None, description="always-valid p-value of the decision")
    confidence_interval: tuple[float, float] | None = Field(
        None, description="always-valid confidence sequence for candidate - control success rate at the decision")


class AdapterRolledBack(Event):
    event_type: ClassVar[str] = "adapter.rolled_back"
    adapter_name: str
    from_version: int
    to_version: int | None
    reason: str
    statistics: dict[str, Any] = Field(default_factory=dict)
    p_value: float | None = Field(None, description="always-valid p-value of the decision (None: manual)")
    confidence_interval: tuple[float, float] | None = Field(
        None, description="always-valid confidence sequence for candidate - control success rate at the decision")
    guardrail: str | None = Field(None, description="errors | latency when a guardrail, not the success rate, decided")


class AdapterAbSampleRatioMismatch(Event):
    """The arms' outcome counts disagree with the configured traffic share: the A/B test stops deciding."""

    event_type: ClassVar[str] = "adapter.ab_srm"
    adapter_name: str
    candidate_version: int
    control_version: int | None = Field(description="None = the base model")
    traffic: float = Field(ge=0.0, le=1.0, description="configured share of the candidate")
    candidate_n: int
    control_n: int
    observed_share: float | None
    p_value: float = Field(description="always-valid p-value of the sequential multinomial test (Lindon & Malek)")
    statistics: dict[str, Any] = Field(default_factory=dict)


class ProductionOutcome(Event):
    """Published by production serving (any language: see `lorafleet events schema`)."""

    event_type: ClassVar[str] = "production.outcome"
    adapter_name: str
    version: int
    request_key: str
    success: bool
    confidence: float = Field(ge=0.0, le=1.0)
    latency_ms: float = Field(ge=0.0)
    error: bool = Field(False, description="serving failed (server error, timeout), not merely a wrong answer: "
                                           "counted by the A/B test's error-rate guardrail")
    problem: str | None = None
    solution: str | None = None
    tests: list[dict[str, Any]] | None = None


class StageFailed(Event):
    """`<stage>.failed`: event_type is set per instance (ingest.failed, training.failed, ...)."""

    event_type: ClassVar[str] = "stage.failed"
    stage: Literal["ingest", "enrich", "training", "evaluation", "registry", "collector"]
    adapter_name: str | None = None
    error: str
    retriable: bool
    input_event_id: str | None = None

    @property
    def failed_type(self) -> str:
        return f"{self.stage}.failed"

    def to_subject(self) -> str:
        return subject_for(self.failed_type)


FAILED_STAGES = ("ingest", "enrich", "training", "evaluation", "registry", "collector")

ALL_EVENTS: tuple[type[Event], ...] = (
    TrainRequested,
    DatasetReady,
    DatasetEnriched,
    TrainingProgress,
    AdapterTrained,
    EvalShardRequested,
    EvalShardDone,
    AdapterEvaluated,
    AdapterRegistered,
    AdapterRejected,
    AdapterAbStarted,
    AdapterPromoted,
    AdapterRolledBack,
    AdapterAbSampleRatioMismatch,
    ProductionOutcome,
    StageFailed,
)

EVENTS_BY_TYPE: dict[str, type[Event]] = {cls.event_type: cls for cls in ALL_EVENTS}
EVENTS_BY_TYPE.update({f"{stage}.failed": StageFailed for stage in FAILED_STAGES})


def event_type_of_subject(subject: str) -> str:
    prefix = SUBJECT_PREFIX + "."
    if not subject.startswith(prefix):
        raise ValueError(f"subject {subject!r} is not under {prefix}")
    return subject[len(prefix):]


def parse_event(subject: str, data: bytes) -> Event:
    """Parse raw bytes from `subject` into its event model; raises ValueError with a readable reason."""
    event_type = event_type_of_subject(subject)
    cls = EVENTS_BY_TYPE.get(event_type)
    if cls is None:
        raise ValueError(f"unknown event type {event_type!r} on subject {subject}")
    try:
        return cls.model_validate_json(data)
    except Exception as exc:  # pydantic.ValidationError or JSON error: one readable reason
        raise ValueError(f"invalid {event_type} event: {exc}") from exc


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every event type, for non-Python producers."""
    out: dict[str, dict[str, Any]] = {}
    for event_type, cls in sorted(EVENTS_BY_TYPE.items()):
        if cls is StageFailed and event_type != "stage.failed":
            continue
        schema = TypeAdapter(cls).json_schema()
        schema["title"] = event_type
        schema["x-subject"] = subject_for(event_type)
        out[event_type] = schema
    for stage in FAILED_STAGES:
        out[f"{stage}.failed"] = {**out["stage.failed"], "title": f"{stage}.failed", "x-subject": subject_for(f"{stage}.failed")}
    del out["stage.failed"]
    return out
