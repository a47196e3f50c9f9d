"""The data models that cross service boundaries inside artifacts.

- `Problem`: one programming problem in the project's own format, normalised
  from any source (ingest writes them; the sandbox judges against their tests;
  the evaluator reads `eval_problems.jsonl` of them).
- `TrainExample`: one line of train.jsonl / eval.jsonl (ingest writes, enrich
  adds reasoning, the trainer renders it with shared/prompts.py).

Files of either are JSON Lines, one model per line (`model_dump_json()`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TestKind = Literal["stdio", "call", "assert"]
Difficulty = Literal["easy", "medium", "hard", "unknown"]
Domain = Literal["python", "math", "algorithms", "data_structures"]


class TestCase(BaseModel):
    """One test.

    - stdio: run the program with `input` on stdin, compare stdout with `output`.
    - call: call `fn_name` (a function, or a method of `class Solution`) with
      `args` (a JSON list) and compare the return value with `expected` (JSON).
    - assert: run `script` after the program (HumanEval/MBPP `check(candidate)`
      style; `entry_point` names the candidate). Passing = exit code 0.
    """

    model_config = ConfigDict(extra="forbid")

    kind: TestKind
    input: str | None = None
    output: str | None = None
    fn_name: str | None = None
    args: list[Any] | None = None
    expected: Any = None
    script: str | None = None
    entry_point: str | None = None


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    time_s: float = 4.0
    memory_mb: int = 512


class Problem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Globally unique: '<source>/<source id>'")
    source: str
    title: str | None = None
    statement: str
    starter_code: str | None = None
    tests: list[TestCase]
    limits: Limits = Field(default_factory=Limits)
    exact_compare: bool = Field(default=False, description="compare stdout byte-exactly instead of token/float tolerant")
    solutions: list[str] = Field(default_factory=list, description="Python 3 candidate solutions (unverified until ingest runs them)")
    tags: list[str] = Field(default_factory=list)
    difficulty: Difficulty = "unknown"
    difficulty_raw: str | None = None
    contest_date: str | None = Field(default=None, description="ISO date, when the source has one")
    domains: list[Domain] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)


class TrainExample(BaseModel):
    """One supervised example: the problem statement and one verified solution."""

    model_config = ConfigDict(extra="forbid")

    id: str
    problem_id: str
    source: str
    statement: str
    starter_code: str | None = None
    code: str
    reasoning: str | None = Field(default=None, description="Added by enrich; None means no trace yet")
    domains: list[str] = Field(default_factory=list)
    difficulty: str = "unknown"
    meta: dict[str, Any] = Field(default_factory=dict)
