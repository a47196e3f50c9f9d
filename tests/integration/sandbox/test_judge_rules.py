"""Judge fidelity rules on real runs (issue 20): exact integers, numpy return values, LeetCode call
semantics (one process per problem, a fresh Solution per test), each call test's own limits, and the idle
limit (time limit + slack of wall time not spent waiting for a CPU) in both engines.
The comparison rules themselves are unit-tested in tests/unit/sandbox/test_compare.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from lorafleet.shared.problems import TestCase as Case
from lorafleet.shared.sandbox import RunLimits, Sandbox
from lorafleet.shared.sandbox.models import IDLE_SLACK_S

QUICK = RunLimits(time_s=1)


@pytest.fixture(scope="module", params=["c", "python"])
def sandbox(request):
    sb = Sandbox(engine=request.param)
    yield sb
    sb.close()


def call(fn, args, expected):
    return Case(kind="call", fn_name=fn, args=args, expected=expected)


def stdio(i, o):
    return Case(kind="stdio", input=i, output=o)


def test_integers_are_exact_on_stdout(sandbox):
    tri = [stdio("100000\n", "5000050000\n")]
    assert sandbox.judge("n = int(input())\nprint(n * (n + 1) // 2)\n", tri, QUICK).passed
    for wrong in ("print(n * (n + 1) / 2)", "print(n * (n + 1) / 2 + 1)", "print(f'{n * (n + 1) // 2:e}')"):
        j = sandbox.judge(f"n = int(input())\n{wrong}\n", tri, QUICK)
        assert j.verdict == "wrong_answer", wrong
    # a float answer is still judged with the tolerance
    assert sandbox.judge("print(1 / 3)", [stdio("", "0.333333333\n")], QUICK).passed


def test_integers_are_exact_in_call_results(sandbox):
    tests = [call("f", [15], 15)]
    assert sandbox.judge("def f(x):\n    return x\n", tests, QUICK).passed
    for wrong in ("x * 1.0", "x - 1e-14", "x == 15"):  # a float, a close float, a bool
        assert sandbox.judge(f"def f(x):\n    return {wrong}\n", tests, QUICK).verdict == "wrong_answer", wrong
    assert sandbox.judge("def f(x):\n    return x / 2\n", [call("f", [3], 1.5)], QUICK).passed


def test_numpy_scalars_and_arrays_are_plain_values(sandbox):
    code = ("import numpy as np\n"
            "def scalar(x):\n    return np.int64(x) * 3\n"
            "def real(x):\n    return np.float32(x) / 2\n"
            "def flag(x):\n    return np.bool_(x > 0)\n"
            "def grid(n):\n    return np.arange(n * 2).reshape(n, 2)\n"
            "def mixed(n):\n    return {'a': [np.int64(n), (np.float64(0.5),)], 'b': np.array([True, False])}\n")
    tests = [call("scalar", [3], 9), call("real", [0.2], 0.1), call("flag", [1], True),
             call("grid", [2], [[0, 1], [2, 3]]), call("mixed", [4], {"a": [4, [0.5]], "b": [True, False]})]
    j = sandbox.judge(code, tests, QUICK, fail_fast=False)
    assert (j.verdict, j.passed_tests) == ("passed", 5), j.detail
    # converted values are still compared by the rules: a numpy float is not an integer
    assert sandbox.judge("import numpy as np\ndef f(x):\n    return np.float64(x)\n", [call("f", [9], 9)],
                         QUICK).verdict == "wrong_answer"


def test_call_tests_share_a_process_and_get_a_fresh_solution_each(sandbox):
    tests = [call("bump", [i], 1) for i in range(3)]
    instance = ("class Solution:\n    def __init__(self):\n        self.calls = 0\n"
                "    def bump(self, x):\n        self.calls += 1\n        return self.calls\n")
    assert sandbox.judge(instance, tests, QUICK).passed  # a fresh Solution() per test
    shared = "class Solution:\n    calls = 0\n    def bump(self, x):\n        Solution.calls += 1\n        return Solution.calls\n"
    j = sandbox.judge(shared, tests, QUICK, fail_fast=False)
    assert (j.verdict, j.failed_test, j.passed_tests) == ("wrong_answer", 1, 1)  # class state lives on, as on LeetCode
    module = "seen = []\ndef f(x):\n    seen.append(x)\n    return len(seen)\n"  # one process: module state lives on
    assert sandbox.judge(module, [call("f", [i], i + 1) for i in range(3)], QUICK).passed


def test_each_call_test_keeps_its_own_limits(sandbox):
    code = ("import time\ndef f(x):\n    if x == 1:\n        while True:\n            pass\n"
            "    if x == 2:\n        time.sleep(30)\n    return x\n")
    j = sandbox.judge(code, [call("f", [0], 0), call("f", [1], 1), call("f", [3], 3)], QUICK, fail_fast=False)
    assert (j.verdict, j.failed_test, j.passed_tests) == ("time_limit", 1, 1), j.detail
    t0 = time.monotonic()
    j = sandbox.judge(code, [call("f", [0], 0), call("f", [2], 2), call("f", [3], 3)], QUICK, fail_fast=False)
    assert (j.verdict, j.failed_test, j.passed_tests) == ("time_limit", 1, 1), j.detail
    assert "idle" in j.detail and time.monotonic() - t0 < 10  # stopped at test 1's own idle limit, not 3 x
    crash = "def f(x):\n    if x == 1:\n        raise ValueError('boom')\n    return x\n"
    j = sandbox.judge(crash, [call("f", [0], 0), call("f", [1], 1), call("f", [2], 2)], QUICK, fail_fast=False)
    assert (j.verdict, j.failed_test, j.passed_tests) == ("runtime_error", 1, 2) and "boom" in j.detail
    leave = "import sys\ndef f(x):\n    if x == 1:\n        sys.exit(0)\n    return x\n"
    j = sandbox.judge(leave, [call("f", [0], 0), call("f", [1], 1), call("f", [2], 2)], QUICK, fail_fast=False)
    assert (j.verdict, j.failed_test, j.passed_tests) == ("wrong_answer", 1, 1)


def test_a_sleeping_program_stops_at_the_time_limit_plus_the_slack(sandbox):
    limits = RunLimits(time_s=1)
    r = sandbox.run("import time\ntime.sleep(30)\n", "", limits)
    assert r.verdict == "time_limit" and "idle" in r.detail
    assert 1000 * limits.idle_s <= r.wall_ms < 1000 * limits.idle_s + 1500, r.wall_ms  # not 2 x time_s + 1
    # blocking on a pipe nobody writes is idling too
    r = sandbox.run("import os\nr, w = os.pipe()\nos.read(r, 1)\n", "", limits)
    assert r.verdict == "time_limit" and "idle" in r.detail
    # within the slack passes
    assert sandbox.judge(f"import time\ntime.sleep({1 + IDLE_SLACK_S / 3:.2f})\nprint(1)\n", [stdio("", "1")],
                         limits).passed
    # the case: 6.5 s of sleep per test against a 6 s limit is a time limit
    j = sandbox.judge("import time\ntime.sleep(6.5)\nprint(1)\n", [stdio("", "1")], RunLimits(time_s=6))
    assert j.verdict == "time_limit"


def test_a_program_slowed_by_load_is_not_stopped_as_idle(sandbox):
    """CPU-bound work that gets half a CPU takes twice its CPU time in wall time: the CPU limit decides."""
    # Each hog in a session of its own: with the kernel's autogroup scheduling, hogs sharing the test's
    # session would together get one share, the sandbox server's session (setsid) another, and the run
    # would hardly slow down.
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
            for _ in range(3 * len(os.sched_getaffinity(0)))]
    try:
        code = ("import time\nt = time.process_time()\nwhile time.process_time() - t < 1.2:\n    pass\nprint(1)\n")
        r = sandbox.run(code, "", RunLimits(time_s=2))
        assert r.verdict == "ok", r.detail
        assert r.wall_ms > 1000 * RunLimits(time_s=2).idle_s, "the load did not slow the run: nothing was tested"
    finally:
        for h in hogs:
            h.kill()
            h.wait()
