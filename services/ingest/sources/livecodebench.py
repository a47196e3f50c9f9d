"""LiveCodeBench `code_generation_lite` (`livecodebench/code_generation_lite`).

Schema: question_title, question_content, platform, question_id, contest_id,
contest_date, starter_code, difficulty, public_test_cases (JSON string: list of
{input, output, testtype: stdin | functional}), private_test_cases (a JSON string,
or base64 of zlib of a pickle of that JSON string), metadata (JSON string with
`func_name` for functional problems). No solutions: validation only.

The private tests are downloaded bytes: they are unpickled with an unpickler that
refuses every global (a pickled str needs none) and must yield a plain str; the
decompressed size is capped so a zip bomb can't exhaust memory.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import pickle
import zlib

from lorafleet.services.ingest.normalise import (
    Malformed, difficulty_from_word, iso_date, json_field, require_tests, text,
)
from lorafleet.shared.problems import Problem, TestCase

NAME = "livecodebench"
MAX_PRIVATE_BYTES = 512 * 1024 * 1024


class _StrOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201
        raise pickle.UnpicklingError(f"refusing global {module}.{name}: only a plain str is allowed")


def loads_str_pickle(data: bytes) -> str:
    """Unpickle bytes that must hold one plain str; anything else raises UnpicklingError."""
    value = _StrOnlyUnpickler(io.BytesIO(data)).load()
    if type(value) is not str:
        raise pickle.UnpicklingError(f"expected a pickled str, got {type(value).__name__}")
    return value


def decode_private(value: object) -> list:
    """private_test_cases: plain JSON, or base64(zlib(pickle(JSON str)))."""
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return value
    if not isinstance(value, str):
        raise Malformed("bad_type:private_test_cases", type(value).__name__)
    if value.lstrip().startswith("["):
        return json_field(value, "private_test_cases", default=[])
    try:
        compressed = base64.b64decode(value.encode("ascii"), validate=True)
        inflater = zlib.decompressobj()
        raw = inflater.decompress(compressed, MAX_PRIVATE_BYTES)
        if inflater.unconsumed_tail:
            raise Malformed("private_tests_too_large", f"over {MAX_PRIVATE_BYTES} bytes decompressed")
        decoded = loads_str_pickle(raw)
    except Malformed:
        raise
    except (binascii.Error, UnicodeEncodeError, zlib.error, pickle.UnpicklingError, EOFError, ValueError,
            TypeError, IndexError, KeyError, MemoryError) as exc:
        raise Malformed("bad_private_tests", f"{type(exc).__name__}: {str(exc)[:80]}") from None
    return json_field(decoded, "private_test_cases", default=[])


def _tests(cases: object, func_name: str | None) -> list[TestCase]:
    if not isinstance(cases, list):
        raise Malformed("bad_type:test_cases", type(cases).__name__)
    tests = []
    for case in cases:
        if not isinstance(case, dict) or not isinstance(case.get("input"), str) or not isinstance(case.get("output"), str):
            raise Malformed("bad_test_case")
        if case.get("testtype") == "functional":
            if not func_name:
                raise Malformed("missing:func_name", "functional test without metadata.func_name")
            try:
                args = [json.loads(line) for line in case["input"].split("\n") if line.strip()]
                expected = json.loads(case["output"])
            except json.JSONDecodeError:
                raise Malformed("bad_json:functional_test") from None
            tests.append(TestCase(kind="call", fn_name=func_name, args=args, expected=expected))
        else:
            tests.append(TestCase(kind="stdio", input=case["input"], output=case["output"]))
    return tests


def to_problem(row: dict, index: int | str) -> Problem:
    qid = text(row.get("question_id"), "question_id") if not isinstance(row.get("question_id"), int) else str(row["question_id"])
    statement = text(row.get("question_content"), "question_content")
    metadata = json_field(row.get("metadata"), "metadata", default={})
    func_name = metadata.get("func_name") if isinstance(metadata, dict) else None
    public = _tests(json_field(row.get("public_test_cases"), "public_test_cases", default=[]), func_name)
    private = _tests(decode_private(row.get("private_test_cases")), func_name)
    tests = require_tests(public + private)
    raw = row.get("difficulty")
    return Problem(
        id=f"{NAME}/{qid}",
        source=NAME,
        title=row.get("question_title") or None,
        statement=statement,
        starter_code=text(row.get("starter_code"), "starter_code", required=False),
        tests=tests,
        difficulty=difficulty_from_word(raw),
        difficulty_raw=str(raw) if raw is not None else None,
        contest_date=iso_date(row.get("contest_date")),
        meta={"platform": row.get("platform"), "contest_id": row.get("contest_id"),
              "tests_first": len(public), "tests_total": len(tests)},
    )
