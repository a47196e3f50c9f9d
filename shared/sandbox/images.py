"""Which server image runs a program: the lean one when everything it imports is already there.

A wrong guess only costs time, never correctness: a module missing from the image is imported by the
child as usual. So the scan is a cheap, conservative regex, not a parse: anything it can't vouch for
(a test driver, `__import__`, importlib, any other import) goes to the full image.
"""

from __future__ import annotations

import re

# Modules every interpreter has imported at startup, plus the lean image's own preloads (_server.IMAGES).
# tests/unit/sandbox/test_images.py checks them against what a real lean server reports.
LEAN_IMPORTS = frozenset({"sys", "os", "io", "abc", "codecs", "stat", "posix", "marshal", "builtins", "time",
                          "types", "atexit"})
_IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+([.\w]+)[ \t]+import\b|import[ \t]+([^#;\n]+))", re.M)


def imported_modules(code: str) -> set[str]:
    """Top-level names of the modules a program's import statements name (a superset is fine)."""
    names = set()
    for m in _IMPORT.finditer(code):
        parts = [m.group(1)] if m.group(1) is not None else [p.split()[0] for p in m.group(2).split(",") if p.split()]
        names.update(p.strip("(").split(".")[0] for p in parts)
    return names


def image_for(code: str, test: dict | None = None) -> str:
    if test is not None or "__import__" in code or "importlib" in code:
        return "full"  # a test driver imports json; dynamic imports can't be read off the text
    return "lean" if imported_modules(code) <= LEAN_IMPORTS else "full"
