"""DeepMind CodeContests (`deepmind/code_contests`).

Schema: name, description, public_tests / private_tests / generated_tests
{input: [str], output: [str]}, solutions / incorrect_solutions {language: [int],
solution: [str]} (3 = Python 3, 1 = Python 2), difficulty (int enum), cf_tags,
cf_rating, time_limit {seconds, nanos}, memory_limit_bytes, source (int enum),
input_file / output_file (non-empty = file I/O instead of stdin/stdout).
`incorrect_solutions` are never candidates.
"""

from __future__ import annotations

from typing import Any

from lorafleet.services.ingest.normalise import (
    Malformed, difficulty_from_rating, parse_megabytes, require_tests, stdio_tests, text,
)
from lorafleet.shared.problems import Limits, Problem

NAME = "codecontests"
PYTHON2, PYTHON3 = 1, 3

DIFFICULTIES = [
    "UNKNOWN_DIFFICULTY", "EASY", "MEDIUM", "HARD", "HARDER", "HARDEST", "EXTERNAL",
    *"ABCDEFGHIJKLMNOPQRSTUV",
]
SOURCES = ["UNKNOWN_SOURCE", "CODECHEF", "CODEFORCES", "HACKEREARTH", "CODEJAM", "ATCODER", "AIZU"]
_BY_NAME = {"EASY": "easy", "MEDIUM": "medium", "HARD": "hard", "HARDER": "hard", "HARDEST": "hard",
            "A": "easy", "B": "easy", "C": "medium", "D": "medium"}


def _enum(names: list[str], value: Any) -> str:
    if isinstance(value, int) and 0 <= value < len(names):
        return names[value]
    return str(value) if value is not None else names[0]


def _tests(row: dict, field: str) -> list:
    block = row.get(field) or {}
    if not isinstance(block, dict):
        raise Malformed(f"bad_type:{field}", type(block).__name__)
    return stdio_tests(block.get("input") or [], block.get("output") or [])


def _solutions(block: Any) -> tuple[list[str], int]:
    if not block:
        return [], 0
    if not isinstance(block, dict):
        raise Malformed("bad_type:solutions", type(block).__name__)
    langs, codes = block.get("language") or [], block.get("solution") or []
    if len(langs) != len(codes):
        raise Malformed("solutions_mismatch", f"{len(langs)} languages, {len(codes)} solutions")
    py3 = [c for lang, c in zip(langs, codes) if lang == PYTHON3 and isinstance(c, str) and c.strip()]
    return py3, sum(1 for lang in langs if lang == PYTHON2)


def to_problem(row: dict, index: int | str) -> Problem:
    name = text(row.get("name"), "name")
    statement = text(row.get("description"), "description")
    if (row.get("input_file") or "").strip() or (row.get("output_file") or "").strip():
        raise Malformed("file_io", "reads/writes files instead of stdin/stdout")
    public, private = _tests(row, "public_tests"), _tests(row, "private_tests")
    tests = require_tests(public + private + _tests(row, "generated_tests"))
    solutions, python2 = _solutions(row.get("solutions"))

    raw_difficulty = _enum(DIFFICULTIES, row.get("difficulty"))
    rating = row.get("cf_rating") if isinstance(row.get("cf_rating"), int) else 0
    difficulty = difficulty_from_rating(rating) if rating else _BY_NAME.get(raw_difficulty, "unknown")
    limits = Limits()
    tl = row.get("time_limit")
    if isinstance(tl, dict) and (tl.get("seconds") or tl.get("nanos")):
        limits.time_s = float(tl.get("seconds") or 0) + float(tl.get("nanos") or 0) / 1e9
    if mb := parse_megabytes(row.get("memory_limit_bytes")):
        limits.memory_mb = mb
    return Problem(
        id=f"{NAME}/{name}",
        source=NAME,
        title=name,
        statement=statement,
        tests=tests,
        limits=limits,
        solutions=solutions,
        tags=[t for t in (row.get("cf_tags") or []) if isinstance(t, str) and t.strip()],
        difficulty=difficulty,
        difficulty_raw=f"{raw_difficulty}" + (f" (cf_rating {rating})" if rating else ""),
        meta={
            "origin": _enum(SOURCES, row.get("source")),
            "skipped_python2": python2,
            "tests_first": len(public) + len(private),
            "tests_total": len(tests),
        },
    )
