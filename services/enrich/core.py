"""The pure part of enrichment: prompts, cache keys, quality checks, outcomes, stats. No I/O."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from lorafleet.shared.config import EnrichSection
from lorafleet.shared.problems import TrainExample

# The spec's wording is not in this tree; this keeps its intent: explain the
# approach that leads to the given solution, without writing the code again
# (the trainer appends the code itself after the reasoning).
REASONING_PROMPT = """Here is a programming problem and a correct Python solution.

Problem:
{statement}

Solution:
```python
{code}
```

Explain, step by step, the reasoning that leads to this solution: what the problem asks, the key observations, the algorithm and why it is correct, and its time complexity. Write it as the thinking you would do before writing the code. Do not write any code and do not repeat the solution."""

FALLBACK_REASONING = "Let me think through the problem step by step, then write the solution."

SYSTEM_PROMPT = "You are an expert competitive programmer who explains solutions clearly and concisely."

Outcome = Literal["generated", "cached", "passthrough", "rejected", "failed"]
RejectReason = Literal["empty", "too_short", "truncated", "contains_code", "code_fence"]
# Fewer words than this is no reasoning (a model that stops after a token or two); the trainer
# would learn to emit the fragment before the code.
MIN_TRACE_WORDS = 3
# The trainer renders reasoning right before the answer's ```python block: an unmatched fence in
# the reasoning breaks that format (and taught the demo's adapter to emit stray fences).
_FENCE_LINE = re.compile(r"^[ \t]*```", re.MULTILINE)


@dataclass(frozen=True)
class Request:
    """What to ask for one example; `key` addresses its answer in the cache."""

    messages: list[dict[str, str]]
    params: dict[str, Any]
    key: str


def sampling_params(cfg: EnrichSection) -> dict[str, Any]:
    params: dict[str, Any] = {"temperature": cfg.temperature, "max_tokens": cfg.max_tokens}
    if cfg.top_p is not None:
        params["top_p"] = cfg.top_p
    return params


def build_messages(example: TrainExample, template: str | None = None) -> list[dict[str, str]]:
    statement = example.statement.strip()
    if example.starter_code:
        statement += "\n\nStarter code:\n" + example.starter_code.strip()
    user = (template or REASONING_PROMPT).format(statement=statement, code=example.code.strip())
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def cache_key(model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
    """Content address of one answer: the model name, the exact prompt and the sampling parameters.

    The endpoint URL is left out on purpose: the same model behind another host or
    port gives the same kind of answer, and a moved server shouldn't pay twice.
    """
    blob = json.dumps({"model": model, "messages": messages, "params": params}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def make_request(example: TrainExample, model: str, cfg: EnrichSection) -> Request:
    messages = build_messages(example, cfg.prompt)
    params = sampling_params(cfg)
    return Request(messages=messages, params=params, key=cache_key(model, messages, params))


def _significant_lines(code: str) -> list[str]:
    lines = [ln.strip() for ln in code.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    long = [ln for ln in lines if len(ln) >= 10]
    return long or lines


_FENCE = re.compile(r"```[^\n`]*\n(.*?)```", re.S)


def pastes_code(text: str, code: str) -> bool:
    """True when the trace repeats the solution: half of its significant lines appear as lines of the
    trace, or a fenced block in the trace shares a significant line with it."""
    wanted = _significant_lines(code)
    if not wanted:
        return False
    have = {ln.strip() for ln in text.splitlines()}
    hits = sum(1 for ln in wanted if ln in have)
    if hits >= max(1, math.ceil(len(wanted) / 2)):
        return True
    for block in _FENCE.findall(text):
        block_lines = {ln.strip() for ln in block.splitlines()}
        if any(ln in block_lines for ln in wanted):
            return True
    return False


def check_trace(text: str, finish_reason: str | None, code: str) -> RejectReason | None:
    """Why a trace is unusable, or None if it is fine."""
    if not text or not text.strip():
        return "empty"
    if finish_reason == "length":
        return "truncated"
    if len(text.split()) < MIN_TRACE_WORDS:
        return "too_short"
    if pastes_code(text, code):
        return "contains_code"
    if len(_FENCE_LINE.findall(text)) % 2:
        return "code_fence"
    return None


def clean_trace(text: str) -> str:
    return text.strip()


@dataclass
class Stats:
    """Counts per outcome. `total` = every example seen; the outcomes add up to it."""

    total: int = 0
    outcomes: Counter = field(default_factory=Counter)
    rejected_by: Counter = field(default_factory=Counter)
    failed_by: Counter = field(default_factory=Counter)
    fallback: int = 0

    def add(self, outcome: Outcome, reason: str | None = None) -> None:
        self.total += 1
        self.outcomes[outcome] += 1
        if outcome == "rejected" and reason:
            self.rejected_by[reason] += 1
        if outcome == "failed" and reason:
            self.failed_by[reason] += 1

    @property
    def failed(self) -> int:
        return self.outcomes["failed"]

    def enriched(self) -> int:
        return self.outcomes["generated"] + self.outcomes["cached"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "skipped": False,
            "total": self.total,
            "enriched": self.enriched(),
            "generated": self.outcomes["generated"],
            "cached": self.outcomes["cached"],
            "passthrough": self.outcomes["passthrough"],
            "rejected": self.outcomes["rejected"],
            "rejected_by_reason": dict(self.rejected_by),
            "failed": self.outcomes["failed"],
            "failed_by_reason": dict(self.failed_by),
            "fallback": self.fallback,
        }


def skipped_stats(reason: str) -> dict[str, Any]:
    return {"skipped": True, "reason": reason}


def apply(example: TrainExample, outcome: Outcome, reasoning: str | None, allow_fallback: bool) -> tuple[TrainExample, bool]:
    """The example as it goes into the enriched dataset; second value: the fallback text was used."""
    if outcome in ("generated", "cached"):
        return example.model_copy(update={"reasoning": reasoning}), False
    if outcome == "failed" and allow_fallback:
        return example.model_copy(update={"reasoning": FALLBACK_REASONING}), True
    return example, False


def has_reasoning(example: TrainExample) -> bool:
    return bool(example.reasoning and example.reasoning.strip())


def is_transient(reason: str) -> bool:
    """Would asking again later help? A 4xx other than 408/409/425/429 (e.g. a prompt longer than the
    model's context) fails the same way every time; timeouts, dropped connections, 429 and 5xx don't."""
    return not (reason.startswith("http_4") and reason not in ("http_408", "http_409", "http_425", "http_429"))


def too_many_failures(stats: Stats, max_failed_fraction: float) -> bool:
    """Too many examples failed for reasons a later retry could fix: the job should be retried, not shipped."""
    asked = stats.total - stats.outcomes["passthrough"]
    transient = sum(n for reason, n in stats.failed_by.items() if is_transient(reason))
    return asked > 0 and transient / asked > max_failed_fraction
