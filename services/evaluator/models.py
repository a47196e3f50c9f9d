"""Data the evaluator passes between its parts (and stores in shard/report artifacts)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Variant = Literal["base", "adapter", "samples"]  # "samples": given completions (eval score)
# What counts toward the error rate (see docs/evaluator.md): the program never got
# to produce an answer. wrong_answer / time_limit / memory_limit are not errors.
ERROR_KINDS = ("no_code", "syntax_error", "runtime_error")


class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    n: int = Field(10, ge=1)
    temperature: float = Field(0.8, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_new_tokens: int = Field(512, ge=1)
    seed: int = 0

    def greedy(self) -> "SamplingParams":
        return self.model_copy(update={"n": 1, "temperature": 0.0, "top_p": 1.0})

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0


class GenRequest(BaseModel):
    """One prompt, sampled params.n times (or once, greedily)."""

    model_config = ConfigDict(frozen=True)
    problem_id: str
    messages: list[dict[str, str]]
    seed: int


class Generation(BaseModel):
    """The completions of one request plus its latency as the backend saw it."""

    texts: list[str]
    output_tokens: list[int]
    ttft_s: float | None = Field(None, description="time to first token of this request")
    tpot_s: float | None = Field(None, description="mean time per output token after the first")


class SampleResult(BaseModel):
    index: int = Field(description="sample number; -1 = the greedy sample")
    verdict: str = Field(description="sandbox verdict, or no_code / syntax_error when the sandbox was not needed")
    error: str | None = Field(None, description="no_code | syntax_error | runtime_error | None")
    passed_tests: int = 0
    total_tests: int = 0
    output_tokens: int | None = None
    detail: str | None = None
    completion: str | None = Field(None, description="the raw completion, cut to a few KiB")


class ProblemResult(BaseModel):
    problem_id: str
    source: str
    difficulty: str
    variant: Variant
    n: int
    correct: int
    greedy_passed: bool | None = None
    samples: list[SampleResult]


class LatencyRecord(BaseModel):
    variant: Variant
    ttft_s: float | None
    tpot_s: float | None
    output_tokens: int


class ShardResult(BaseModel):
    """What one shard (or a whole local run) produced: per-problem results and latencies."""

    evaluation_id: str
    shard_index: int = 0
    problems: list[ProblemResult]
    latency: list[LatencyRecord] = Field(default_factory=list)
    backend: str
    meta: dict[str, Any] = Field(default_factory=dict)
