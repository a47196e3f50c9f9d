"""TACO (`BAAI/TACO`): APPS-like string fields plus tags.

Schema: question, solutions (JSON string), input_output (JSON string {inputs,
outputs, fn_name?}), starter_code, url, difficulty (EASY, MEDIUM, MEDIUM_HARD,
HARD, VERY_HARD, UNKNOWN_DIFFICULTY), tags / skill_types / raw_tags (stringified
lists), time_limit ('1 seconds'), memory_limit ('256 megabytes'), source, date.
TACO has no id column: the id is the row's position in its file.
"""

from __future__ import annotations

from lorafleet.services.ingest.normalise import (
    difficulty_from_word, iso_date, json_field, listish, parse_megabytes, parse_seconds, text,
)
from lorafleet.services.ingest.sources.apps import solutions_from, tests_from_input_output
from lorafleet.shared.problems import Limits, Problem

NAME = "taco"


def to_problem(row: dict, index: int | str) -> Problem:
    statement = text(row.get("question"), "question")
    tests = tests_from_input_output(json_field(row.get("input_output"), "input_output", default={}))
    raw = row.get("difficulty")
    limits = Limits()
    if secs := parse_seconds(row.get("time_limit")):
        limits.time_s = secs
    if mb := parse_megabytes(row.get("memory_limit")):
        limits.memory_mb = mb
    tags = listish(row.get("tags")) + listish(row.get("skill_types"))
    return Problem(
        id=f"{NAME}/{row.get('id', index)}",
        source=NAME,
        statement=statement,
        starter_code=text(row.get("starter_code"), "starter_code", required=False),
        tests=tests,
        limits=limits,
        solutions=solutions_from(row.get("solutions")),
        tags=list(dict.fromkeys(tags)),
        difficulty=difficulty_from_word(raw),
        difficulty_raw=str(raw) if raw is not None else None,
        contest_date=iso_date(row.get("date")),
        meta={
            "url": row.get("url"), "origin": row.get("source"), "raw_tags": listish(row.get("raw_tags")),
            "call_based": tests[0].kind == "call", "tests_total": len(tests),
        },
    )
