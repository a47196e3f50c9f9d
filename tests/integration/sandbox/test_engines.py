"""The two engines (zygote.c and _server.py), the two server images, CPU pinning, and building the C engine."""

from __future__ import annotations

import logging
import os
import secrets

import pytest

from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.problems import TestCase as Case
from lorafleet.shared.sandbox import RunLimits, Sandbox, zygote_build
from lorafleet.shared.sandbox._server import IMAGES
from lorafleet.shared.sandbox.images import LEAN_IMPORTS

QUICK = RunLimits(time_s=1, wall_s=3, memory_mb=256)
IS_ROOT = os.geteuid() == 0
PROGRAMS = [
    ("print(int(input()) * 2)", "21\n"),
    ("import sys\nprint(sys.stdin.read()[::-1], end='')\nprint('e', file=sys.stderr)\nsys.exit(3)", "abc"),
    ("from collections import Counter\nprint(Counter('hello').most_common(1))", ""),
    ("raise KeyError('k')", ""),
    ("import os\nos.kill(os.getpid(), 9)", ""),
    ("print('x' * 5000, end='')", ""),
    ("while True: pass", ""),
    ("print('y' * (1 << 20))", ""),
    ("import atexit\natexit.register(lambda: print('bye'))\nprint('hi')", ""),
]


@pytest.fixture(scope="module")
def engines():
    sandboxes = {engine: Sandbox(engine=engine) for engine in ("c", "python")}
    yield sandboxes
    for sb in sandboxes.values():
        sb.close()


@pytest.mark.parametrize(("code", "stdin"), PROGRAMS)
def test_both_engines_agree(engines, code, stdin):
    limits = RunLimits(time_s=1, wall_s=3, memory_mb=256, output_bytes=64 * 1024)
    c, py = (engines[e].run(code, stdin, limits) for e in ("c", "python"))
    fields = ("verdict", "exit_code", "signal", "stdout", "stdout_truncated", "detail")
    assert [getattr(c, f) for f in fields] == [getattr(py, f) for f in fields]
    assert c.stderr.splitlines()[-1:] == py.stderr.splitlines()[-1:]
    assert [x for x in c.isolation if x != "seccomp"] == py.isolation
    assert "seccomp" in c.isolation and "seccomp" not in py.isolation  # C engine only (root and rootless alike)


def test_both_engines_judge_alike(engines):
    tests = [Case(kind="call", fn_name="add", args=[1, 2], expected=3),
             Case(kind="assert", script="def check(f):\n    assert f(2, 2) == 4\n", entry_point="add")]
    for sb in engines.values():
        assert sb.judge("def add(a, b):\n    return a + b\n", tests, QUICK, fail_fast=False).verdict == "passed"
        wrong = sb.judge("def add(a, b):\n    return a - b\n", tests, QUICK, fail_fast=False)
        assert (wrong.verdict, wrong.passed_tests) == ("wrong_answer", 0)


def test_the_c_engine_runs_where_it_builds(engines):
    engines["c"].run("print(1)")
    assert {s.engine for s in engines["c"].servers()} == {"c"}  # root and rootless (user namespace) alike


def test_each_image_holds_what_the_harness_counts_on(engines):
    sb = engines["c"]
    sb.warm(1)
    by_image = {s.image: s.modules for s in sb.servers()}
    assert LEAN_IMPORTS <= by_image["lean"], LEAN_IMPORTS - by_image["lean"]
    assert set(IMAGES["full"]) <= by_image["full"]
    if {s.engine for s in sb.servers()} == {"c"}:  # the Python engine's own modules fill its lean image
        assert len(by_image["lean"]) < len(by_image["full"]) / 2


@pytest.mark.parametrize("engine", ["c", "python"])
def test_a_program_imports_from_the_venv_wherever_it_lives(engines, engine):
    """The venv is bound into the minimal root even under /tmp or /var/tmp (a CI clone), on top of the
    private tmpfs, not hidden by it; the C engine's interpreter is the venv's own python."""
    r = engines[engine].run("import sys, pydantic\nprint(sys.prefix == sys.base_prefix, pydantic.VERSION)", "", QUICK)
    assert (r.verdict, r.stdout.split()[0]) == ("ok", "False"), r


def test_nothing_of_a_run_stays_in_the_memory_the_next_child_is_forked_from():
    """A run's stdin and output are wiped from the server before the next child is forked."""
    marker = "LFWIPE" + secrets.token_hex(8)
    # /proc/self/mem is closed to a dropped child (not dumpable): read its own writable memory with ctypes.
    scan = f"""
import ctypes
needle = bytes.fromhex({marker.encode().hex()!r})
count = 0
with open('/proc/self/maps') as maps:
    for line in maps:
        span, perms, *rest = line.split()
        if not perms.startswith('rw') or '[v' in line:
            continue
        lo, hi = (int(x, 16) for x in span.split('-'))
        count += ctypes.string_at(lo, hi - lo).count(needle)
print(count)
"""
    sb = Sandbox(engine="c", max_servers=1)
    try:
        # Both programs import ctypes: the same (full) image, so the same server runs both.
        first = sb.run("import ctypes, sys\ndata = sys.stdin.read()\nprint(data[:4000])\n", marker * 1000, QUICK)
        assert first.stdout.count(marker) > 100
        second = sb.run(scan, "", QUICK)
        assert len(sb.servers()) == 1 and second.verdict == "ok", second
        assert int(second.stdout) < 5  # its own needle (and copies of it), not the 1000 of the last run
    finally:
        sb.close()


def test_servers_are_pinned_one_cpu_each_unless_told_not_to():
    allowed = os.sched_getaffinity(0)
    for pin, expect in ((True, 1), (False, len(allowed))):
        sb = Sandbox(pin_cpus=pin)
        try:
            sb.warm(1, images=["lean"])
            server = sb.servers()[0]
            assert len(os.sched_getaffinity(server.pid)) == expect
            assert sb.run("print(1)").stdout == "1\n"
        finally:
            sb.close()


@pytest.fixture
def no_compiler(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", "false")
    monkeypatch.setenv("LORAFLEET_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(zygote_build, "_built", {})


def test_engine_c_without_a_compiler_says_what_is_missing(no_compiler):
    with pytest.raises(zygote_build.EngineUnavailable, match="C compiler and Python's headers.*ENGINE=auto"):
        Sandbox(engine="c").run("print(1)")


def test_engine_auto_without_a_compiler_falls_back_with_a_warning(no_compiler, caplog):
    sb = Sandbox(engine="auto")
    try:
        with caplog.at_level(logging.WARNING):
            assert sb.run("print(1)").stdout == "1\n"
        assert {s.engine for s in sb.servers()} == {"python"}
        assert "slower Python engine" in caplog.text
    finally:
        sb.close()


def test_unknown_engine_setting(monkeypatch):
    monkeypatch.setenv("LORAFLEET_SANDBOX_ENGINE", "turbo")
    with pytest.raises(LorafleetError, match="LORAFLEET_SANDBOX_ENGINE='turbo'.*auto, c, python"):
        Sandbox()


def test_the_build_is_cached_and_atomic(monkeypatch, tmp_path):
    monkeypatch.setenv("LORAFLEET_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(zygote_build, "_built", {})
    lib = zygote_build.zygote_library("c")
    assert lib is not None and lib.parent == tmp_path / "sandbox"
    assert [p.name for p in lib.parent.iterdir()] == [lib.name]  # no temporary file left
    monkeypatch.setattr(zygote_build, "_built", {})
    assert zygote_build.zygote_library("c") == lib
    assert zygote_build.zygote_library("python") is None
