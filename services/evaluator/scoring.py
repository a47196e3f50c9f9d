"""From completions to judged samples: extract the program, reject what can't
run without spending a sandbox run on it, judge the rest, count per problem.

Pure except for the injected `judge` coroutine (the sandbox in production).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from lorafleet.services.evaluator.models import ProblemResult, SampleResult, Variant
from lorafleet.shared.problems import Problem

Mode = Literal["chat", "completion", "auto"]
MAX_COMPLETION_CHARS = 4000
KEEP_COMPLETIONS = 3  # sampled completions kept per problem and variant in results (greedy always kept)
MAX_DETAIL_CHARS = 500

# judge([(program, problem), ...]) -> objects with verdict, passed_tests, total_tests, detail
JudgeFn = Callable[[list[tuple[str, Problem]]], Awaitable[Sequence[Any]]]


@dataclass(frozen=True)
class Completion:
    problem_id: str
    variant: Variant
    index: int  # -1 = greedy
    text: str
    output_tokens: int | None = None


def _is_completion_style(problem: Problem, text: str, mode: Mode) -> bool:
    if mode != "auto":
        return mode == "completion"
    # HumanEval samples are function bodies that continue the prompt; a fenced
    # block means the model wrote the whole program itself.
    return problem.source == "humaneval" and "```" not in text


def program_for(problem: Problem, text: str, mode: Mode = "auto") -> str | None:
    """The program to judge, or None when the completion holds no code."""
    from lorafleet.shared.prompts import extract_code

    if _is_completion_style(problem, text, mode):
        prefix = problem.starter_code or problem.meta.get("prompt") or ""
        return prefix + text
    code = extract_code(text)
    return code if code and code.strip() else None


def syntax_error(code: str) -> str | None:
    """The compile error of `code`, if any. compile() parses without executing."""
    try:
        compile(code, "<candidate>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        return f"SyntaxError: {exc.msg} (line {exc.lineno})"
    except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _cut(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f"... [{len(text) - limit} more chars]"


async def score(
    problems: dict[str, Problem],
    completions: Sequence[Completion],
    judge: JudgeFn,
    mode: Mode = "auto",
) -> list[ProblemResult]:
    """Judge every completion; one ProblemResult per (problem, variant), in input order."""
    unknown = sorted({c.problem_id for c in completions} - problems.keys())
    if unknown:
        raise KeyError(f"{len(unknown)} samples name problems not in the problem set, e.g. {unknown[:3]}")
    results: list[SampleResult | None] = [None] * len(completions)
    to_judge: list[tuple[int, str]] = []
    for i, c in enumerate(completions):
        program = program_for(problems[c.problem_id], c.text, mode)
        kept = _cut(c.text, MAX_COMPLETION_CHARS) if c.index < KEEP_COMPLETIONS else None
        base = dict(index=c.index, output_tokens=c.output_tokens, completion=kept)
        if program is None:
            results[i] = SampleResult(verdict="no_code", error="no_code", **base)
        elif (err := syntax_error(program)) is not None:
            results[i] = SampleResult(verdict="syntax_error", error="syntax_error", detail=err, **base)
        else:
            to_judge.append((i, program))
    judgements = await judge([(program, problems[completions[i].problem_id]) for i, program in to_judge]) if to_judge else []
    for (i, _), j in zip(to_judge, judgements, strict=True):
        c = completions[i]
        verdict = str(j.verdict)
        results[i] = SampleResult(
            index=c.index, verdict=verdict, error="runtime_error" if verdict == "runtime_error" else None,
            passed_tests=j.passed_tests, total_tests=j.total_tests, output_tokens=c.output_tokens,
            detail=_cut(getattr(j, "detail", None), MAX_DETAIL_CHARS),
            completion=_cut(c.text, MAX_COMPLETION_CHARS) if c.index < KEEP_COMPLETIONS else None,
        )
    grouped: dict[tuple[str, str], list[SampleResult]] = {}
    for c, r in zip(completions, results, strict=True):
        assert r is not None
        grouped.setdefault((c.problem_id, c.variant), []).append(r)
    return [problem_result(problems[pid], variant, samples) for (pid, variant), samples in grouped.items()]  # type: ignore[arg-type]


def problem_result(problem: Problem, variant: Variant, samples: list[SampleResult]) -> ProblemResult:
    sampled = [s for s in samples if s.index >= 0]
    greedy = [s for s in samples if s.index < 0]
    return ProblemResult(
        problem_id=problem.id, source=problem.source, difficulty=problem.difficulty, variant=variant,
        n=len(sampled), correct=sum(s.verdict == "passed" for s in sampled),
        greedy_passed=(greedy[0].verdict == "passed") if greedy else None,
        samples=sorted(samples, key=lambda s: s.index),
    )
