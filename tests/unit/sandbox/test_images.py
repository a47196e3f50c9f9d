"""Which server image a program goes to (pure: no server)."""

from __future__ import annotations

import pytest

from lorafleet.shared.sandbox.images import LEAN_IMPORTS, image_for, imported_modules


@pytest.mark.parametrize(
    ("code", "modules"),
    [
        ("print(int(input()) * 2)\n", set()),
        ("import sys\ninput = sys.stdin.readline\n", {"sys"}),
        ("import os.path, sys as s  # comment\n", {"os", "sys"}),
        ("from collections import deque\n", {"collections"}),
        ("def f():\n    from math import gcd\n    return gcd\n", {"math"}),
        ("from . import x\n", {""}),
        ("import a; import b\n", {"a"}),  # the second statement is missed: a miss only costs speed
        ("from typing import (\n    List,\n)\n", {"typing"}),
    ],
)
def test_imported_modules(code, modules):
    assert imported_modules(code) == modules


@pytest.mark.parametrize(
    ("code", "test", "image"),
    [
        ("print(int(input()) * 2)\n", None, "lean"),
        ("import sys, os\nprint(sys.stdin.read())\n", None, "lean"),
        ("import heapq\n", None, "full"),
        ("m = __import__('heapq')\n", None, "full"),
        ("import importlib\n", None, "full"),
        ("def f(): return 1\n", {"kind": "call", "fn_name": "f", "args": "[]"}, "full"),  # the driver needs json
    ],
)
def test_image_for(code, test, image):
    assert image_for(code, test) == image


def test_lean_imports_are_plain_module_names():
    assert all(name and "." not in name for name in LEAN_IMPORTS)
