"""Output comparison: whitespace-tolerant tokens with a float rule, JSON values, and an exact mode."""

from __future__ import annotations

import math
import re
from typing import Any

TOLERANCE = 1e-6
_INT = re.compile(r"[+-]?\d+")


def _float(token: str) -> float | None:
    try:
        return float(token)
    except ValueError:
        return None


def tokens_match(actual: str, expected: str) -> bool:
    """Equal token by token; two tokens that both parse as numbers match within 1e-6 abs or rel.

    Two integers must be equal exactly: float parsing would make large answers that differ in
    the last digit look equal.
    """
    if actual == expected:
        return True
    a, e = actual.split(), expected.split()
    if len(a) != len(e):
        return False
    for x, y in zip(a, e):
        if x == y:
            continue
        if _INT.fullmatch(x) and _INT.fullmatch(y):
            if int(x) != int(y):
                return False
            continue
        fx, fy = _float(x), _float(y)
        if fx is None or fy is None or not _close(fx, fy):
            return False
    return True


def exact_match(actual: str, expected: str) -> bool:
    """Byte-exact apart from line endings and one trailing newline (datasets often drop it)."""
    norm = lambda s: s.replace("\r\n", "\n").removesuffix("\n")  # noqa: E731
    return norm(actual) == norm(expected)


def outputs_match(actual: str, expected: str, exact: bool = False) -> bool:
    return exact_match(actual, expected) if exact else tokens_match(actual, expected)


def _close(x: float, y: float) -> bool:
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return math.isclose(x, y, rel_tol=TOLERANCE, abs_tol=TOLERANCE)


def normalise(value: Any) -> Any:
    """JSON normalisation: tuples become lists, recursively (what a JSON round trip does)."""
    if isinstance(value, (list, tuple)):
        return [normalise(v) for v in value]
    if isinstance(value, dict):
        return {str(k): normalise(v) for k, v in value.items()}
    return value


def values_match(actual: Any, expected: Any, exact: bool = False) -> bool:
    """Return values after JSON normalisation; floats by the 1e-6 rule unless exact.

    Not exact also accepts APPS's habit of wrapping a call's expected value in a one-element list.
    """
    actual, expected = normalise(actual), normalise(expected)
    if exact:
        return actual == expected
    if _values_close(actual, expected):
        return True
    return isinstance(expected, list) and len(expected) == 1 and _values_close(actual, expected[0])


def _values_close(a: Any, e: Any) -> bool:
    if isinstance(a, bool) or isinstance(e, bool):
        return type(a) is type(e) and a == e
    if isinstance(a, (int, float)) and isinstance(e, (int, float)):
        if isinstance(a, int) and isinstance(e, int):
            return a == e
        return _close(float(a), float(e))
    if isinstance(a, list) and isinstance(e, list):
        return len(a) == len(e) and all(_values_close(x, y) for x, y in zip(a, e))
    if isinstance(a, dict) and isinstance(e, dict):
        return a.keys() == e.keys() and all(_values_close(a[k], e[k]) for k in a)
    return a == e
