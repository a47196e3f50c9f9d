"""Shared pieces of the per-source loaders: one row in, one `Problem` out, or `Malformed`.

Loaders are pure: they take a decoded row (a dict in the source's real schema) and
return a `Problem`; a row that can't become a usable problem raises `Malformed`
with a short reason, which the pipeline counts and skips.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

from lorafleet.shared.problems import Difficulty, TestCase


class Malformed(Exception):
    """This row can't be used; `reason` is a short, countable key (e.g. `bad_json:input_output`)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def text(value: Any, field: str, required: bool = True) -> str | None:
    """A string field, newlines normalised; bytes must be UTF-8."""
    if value is None or value == "":
        if required:
            raise Malformed(f"missing:{field}")
        return None
    value = _as_str(value, field)
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    if required and not value.strip():
        raise Malformed(f"missing:{field}")
    return value


def _as_str(value: Any, field: str) -> str:
    """Bytes decoded as UTF-8; anything that isn't text is malformed."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed("non_utf8", field) from None
    if not isinstance(value, str):
        raise Malformed(f"bad_type:{field}", type(value).__name__)
    return value


def json_field(value: Any, field: str, default: Any = None) -> Any:
    """A field stored as a JSON string (APPS/TACO/LiveCodeBench); already-parsed values pass through."""
    if value is None or value == "":
        return default
    if isinstance(value, (dict, list)):
        return value
    value = _as_str(value, field)
    try:
        return json.loads(value)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise Malformed(f"bad_json:{field}", str(exc)[:80]) from None


def listish(value: Any) -> list[str]:
    """TACO's `tags`/`skill_types`/`raw_tags` are stringified Python lists; accept lists too."""
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v is not None and str(v).strip()]
    if isinstance(value, str):
        s = value.strip()
        try:
            parsed = json.loads(s.replace("'", '"')) if s.startswith("[") else [s]
        except json.JSONDecodeError:
            parsed = re.findall(r"'([^']*)'|\"([^\"]*)\"", s)
            parsed = [a or b for a, b in parsed]
        return [str(v) for v in parsed if str(v).strip()]
    return []


def _stdin_text(value: Any) -> str:
    # APPS/TACO store a few stdio inputs as lists of lines.
    if isinstance(value, list):
        return "\n".join(str(v) for v in value) + "\n"
    if not isinstance(value, str):
        raise Malformed("bad_test_value", type(value).__name__)
    return value


def stdio_tests(inputs: Iterable[Any], outputs: Iterable[Any]) -> list[TestCase]:
    inputs, outputs = list(inputs or []), list(outputs or [])
    if len(inputs) != len(outputs):
        raise Malformed("tests_mismatch", f"{len(inputs)} inputs, {len(outputs)} outputs")
    return [TestCase(kind="stdio", input=_stdin_text(i), output=_stdin_text(o)) for i, o in zip(inputs, outputs)]


def call_tests(fn_name: str, inputs: Iterable[Any], outputs: Iterable[Any], unwrap: bool) -> list[TestCase]:
    """Function-call tests. APPS/TACO wrap each expected value in a one-element list
    (their checker accepts either form); `unwrap` takes the element out."""
    inputs, outputs = list(inputs or []), list(outputs or [])
    if len(inputs) != len(outputs):
        raise Malformed("tests_mismatch", f"{len(inputs)} inputs, {len(outputs)} outputs")
    tests = []
    for args, expected in zip(inputs, outputs):
        if not isinstance(args, list):
            args = [args]
        if unwrap and isinstance(expected, list) and len(expected) == 1:
            expected = expected[0]
        tests.append(TestCase(kind="call", fn_name=fn_name, args=args, expected=expected))
    return tests


def require_tests(tests: list[TestCase]) -> list[TestCase]:
    if not tests:
        raise Malformed("no_tests")
    return tests


DIFFICULTY_WORDS: dict[str, Difficulty] = {
    "easy": "easy", "introductory": "easy",
    "medium": "medium", "interview": "medium", "medium_hard": "hard",
    "hard": "hard", "competition": "hard", "very_hard": "hard",
}


def difficulty_from_word(raw: Any) -> Difficulty:
    if raw is None:
        return "unknown"
    return DIFFICULTY_WORDS.get(str(raw).strip().lower().replace(" ", "_"), "unknown")


def difficulty_from_rating(rating: int | None) -> Difficulty:
    """Codeforces rating bands (800 … 3500)."""
    if not rating or rating <= 0:
        return "unknown"
    if rating <= 1300:
        return "easy"
    if rating <= 2000:
        return "medium"
    return "hard"


_SECONDS = re.compile(r"([0-9]*\.?[0-9]+)\s*(ms|millisecond|s|sec|second)?", re.I)
_MEGABYTES = re.compile(r"([0-9]*\.?[0-9]+)\s*(k|m|g)?", re.I)


def parse_seconds(value: Any) -> float | None:
    """'1 second', '2.5 seconds', '1000 ms', 2 -> seconds; None when absent or unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value) if value > 0 else None
    m = _SECONDS.search(str(value))
    if not m:
        return None
    secs = float(m.group(1)) / (1000.0 if (m.group(2) or "").lower().startswith("m") else 1.0)
    return secs if secs > 0 else None


def parse_megabytes(value: Any) -> int | None:
    """'256 megabytes', '64 MB', 268435456 (bytes when > 1e5) -> MB."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        mb = value / (1024 * 1024) if value > 100_000 else value
        return int(mb) if mb > 0 else None
    m = _MEGABYTES.search(str(value))
    if not m:
        return None
    factor = {"k": 1 / 1024, "g": 1024}.get((m.group(2) or "m").lower(), 1)
    mb = int(float(m.group(1)) * factor)
    return mb if mb > 0 else None


def iso_date(value: Any) -> str | None:
    """An ISO date (YYYY-MM-DD) from a datetime, an ISO string or a 'YYYY-MM-DD ...' string."""
    if value is None or value == "":
        return None
    if hasattr(value, "date") and callable(value.date):
        return value.date().isoformat()
    m = re.match(r"\s*(\d{4})-(\d{1,2})-(\d{1,2})", str(value))
    if not m:
        return None
    y, mo, d = (int(g) for g in m.groups())
    return f"{y:04d}-{mo:02d}-{d:02d}"
