"""Output comparison: whitespace-tolerant tokens with exact integers and a float rule, JSON values,
and an exact mode. The rules, beside Codeforces' and LiveCodeBench's, are the table in docs/sandbox.md.
"""

from __future__ import annotations

import math
import re
from typing import Any

TOLERANCE = 1e-6
# ASCII digits only: `\d` and int() also take other scripts' digits, float() takes "1_0", "inf", "nan".
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _int_key(token: str) -> tuple[bool, str]:
    """(negative, digits without leading zeros) of an integer token: compared without int(), which
    refuses more than 4300 digits; "-0" is zero."""
    digits = token.lstrip("+-").lstrip("0") or "0"
    return token.startswith("-") and digits != "0", digits


def token_matches(actual: str, expected: str) -> bool:
    """One token against the expected one.

    - expected is an integer token: the answer must be an integer token of the same value (leading
      zeros and a '+' allowed); no float or exponent form, however close;
    - expected is a decimal number (a '.' or an exponent): any number within 1e-6 absolute or relative;
    - anything else (words, 'inf', 'nan'): the same text.
    """
    if actual == expected:
        return True
    if _INT.fullmatch(expected):
        return _INT.fullmatch(actual) is not None and _int_key(actual) == _int_key(expected)
    if _FLOAT.fullmatch(expected) and _FLOAT.fullmatch(actual):
        return _close(float(actual), float(expected))
    return False


def tokens_match(actual: str, expected: str) -> bool:
    """Equal token by token (whitespace of any kind and amount separates tokens), by token_matches."""
    if actual == expected:
        return True
    a, e = actual.split(), expected.split()
    return len(a) == len(e) and all(token_matches(x, y) for x, y in zip(a, e))


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
    """Return values after JSON normalisation, by the rules of _values_close unless exact.

    Not exact also accepts APPS's habit of wrapping a call's expected value in a one-element list.
    """
    actual, expected = normalise(actual), normalise(expected)
    if exact:
        return _same(actual, expected)
    if _values_close(actual, expected):
        return True
    return isinstance(expected, list) and len(expected) == 1 and _values_close(actual, expected[0])


def _values_close(a: Any, e: Any) -> bool:
    """Structural equality where the expected value's type decides: an int (not a bool) wants an equal
    int, never a float however close; a float wants an int or float within 1e-6 abs or rel; a bool wants
    a bool."""
    if isinstance(a, bool) or isinstance(e, bool):
        return type(a) is type(e) and a == e
    if isinstance(e, int):
        return isinstance(a, int) and a == e
    if isinstance(e, float):
        return isinstance(a, (int, float)) and _close(float(a), e)
    if isinstance(a, list) and isinstance(e, list):
        return len(a) == len(e) and all(_values_close(x, y) for x, y in zip(a, e))
    if isinstance(a, dict) and isinstance(e, dict):
        return a.keys() == e.keys() and all(_values_close(a[k], e[k]) for k in a)
    return type(a) is type(e) and a == e


def _same(a: Any, e: Any) -> bool:
    """exact: equal and of the same JSON types all the way down (1 is not 1.0, True is not 1)."""
    if isinstance(a, list) and isinstance(e, list):
        return len(a) == len(e) and all(_same(x, y) for x, y in zip(a, e))
    if isinstance(a, dict) and isinstance(e, dict):
        return a.keys() == e.keys() and all(_same(a[k], e[k]) for k in a)
    return type(a) is type(e) and a == e
