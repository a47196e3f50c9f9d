"""Splitting one evaluation into shards that replicas share, and deciding (by a
compare-and-set on one KV record per evaluation) which replica aggregates.

Pure: the record in, the new record and the decision out; app.py does the KV I/O.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from lorafleet.shared.events import ArtifactRef


class EvalSpec(BaseModel):
    """Everything a replica needs to run any shard of one evaluation (stored as an artifact)."""

    evaluation_id: str
    trained: dict[str, Any] = Field(description="the adapter.trained event (model_dump)")
    problems: ArtifactRef = Field(description="Problem JSONL")
    problem_ids: list[str]
    evaluation: dict[str, Any] = Field(description="EvaluationSection")
    gate: dict[str, Any] = Field(description="GateSection")
    shard_count: int


class EvalProgress(BaseModel):
    """The KV record of one evaluation: which shards are done and who aggregates."""

    evaluation_id: str
    shard_count: int
    spec: ArtifactRef
    done: dict[str, ArtifactRef] = Field(default_factory=dict, description="shard index -> its result")
    aggregator: str | None = Field(None, description="event id of the eval.shard_done that completed the set")

    @property
    def complete(self) -> bool:
        return len(self.done) >= self.shard_count


def plan_shards(problem_ids: list[str], shard_size: int) -> list[list[str]]:
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    if not problem_ids:
        raise ValueError("an evaluation needs at least one problem")
    if len(set(problem_ids)) != len(problem_ids):
        raise ValueError("problem ids must be unique")
    return [problem_ids[i:i + shard_size] for i in range(0, len(problem_ids), shard_size)]


def record_shard(progress: EvalProgress, shard_index: int, result: ArtifactRef, event_id: str) -> tuple[EvalProgress, bool]:
    """Add a finished shard; returns the new record and whether *this* event must aggregate.

    The first event that completes the set claims the aggregation; a redelivery of
    that same event claims it again (it may have died mid-aggregation), any other
    never does. So the result is aggregated once, and only re-done by the claimant.
    """
    if not 0 <= shard_index < progress.shard_count:
        raise ValueError(f"shard {shard_index} is outside 0..{progress.shard_count - 1}")
    done = dict(progress.done)
    done.setdefault(str(shard_index), result)
    new = progress.model_copy(update={"done": done})
    if new.complete and new.aggregator is None:
        new = new.model_copy(update={"aggregator": event_id})
    return new, new.complete and new.aggregator == event_id
