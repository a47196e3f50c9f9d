import signal

from lorafleet.shared.problems import TestCase as Case
from lorafleet.shared.sandbox.models import RunLimits, RunResult
from lorafleet.shared.sandbox.verdicts import grade, grade_calls, run_result, split_sentinel

LIM = RunLimits(time_s=2, memory_mb=256)


def head(**kw):
    base = {"exit_code": 0, "signal": None, "killed_for": None, "wall_ms": 5.0, "cpu_ms": 3.0, "maxrss_kb": 10_000,
            "setup_error": None, "stdout_truncated": False, "stderr_truncated": False}
    return base | kw


def verdict(h, err=b""):
    return run_result(h, b"out", err, LIM, ["rlimits"]).verdict


def test_run_verdicts():
    assert verdict(head()) == "ok"
    assert verdict(head(exit_code=1), b"Traceback\nValueError: x\n") == "runtime_error"
    assert verdict(head(exit_code=1), b"Traceback\nMemoryError\n") == "memory_limit"
    assert verdict(head(exit_code=None, signal=signal.SIGSEGV)) == "runtime_error"
    assert verdict(head(exit_code=None, signal=signal.SIGSEGV, maxrss_kb=250 * 1024)) == "memory_limit"
    assert verdict(head(exit_code=None, signal=signal.SIGXCPU, cpu_ms=1990.0)) == "time_limit"
    assert verdict(head(cpu_ms=2500.0)) == "time_limit"  # finished, but over the CPU limit
    assert verdict(head(exit_code=None, signal=signal.SIGKILL, killed_for="wall")) == "time_limit"
    assert verdict(head(exit_code=None, signal=signal.SIGKILL, killed_for="idle")) == "time_limit"
    assert verdict(head(exit_code=None, signal=signal.SIGKILL, killed_for="output", stdout_truncated=True)) == "output_limit"
    assert verdict(head(setup_error="PermissionError")) == "sandbox_error"
    assert run_result({"error": "boom"}, b"", b"", LIM, []).verdict == "sandbox_error"


def test_run_result_decodes_and_keeps_layers():
    r = run_result(head(), "é".encode() + b"\xff", b"", LIM, ["a", "b"])
    assert r.stdout == "é\ufffd"
    assert r.isolation == ["a", "b"]
    assert set(r.public()) == {"verdict", "exit_code", "stdout", "stderr", "wall_ms", "cpu_ms", "isolation"}


def test_split_sentinel():
    assert split_sentinel("hello\nN1 [1, 2]\n", "N1") == ("hello", "[1, 2]")
    assert split_sentinel("\nN1 passed\n", "N1") == ("", "passed")
    assert split_sentinel("no marker", "N1") == ("no marker", None)


def ok(stdout, **kw):
    return RunResult(verdict="ok", exit_code=0, stdout=stdout, **kw)


def test_grade_stdio():
    t = Case(kind="stdio", input="1", output="2\n")
    assert grade(t, ok("2"), "N")[0] == "passed"
    assert grade(t, ok("3"), "N")[0] == "wrong_answer"
    tle = RunResult(verdict="time_limit", detail="slow")
    assert grade(t, tle, "N") == ("time_limit", "slow")


def calls(*expected):
    return [Case(kind="call", fn_name="f", args=[i], expected=e) for i, e in enumerate(expected)]


def graded(tests, stdout, result=None):
    result = result or ok(stdout)
    return [g and g[0] for g in grade_calls(tests, result, "N", time_s=1.0, idle_s=1.3)]


def test_grade_calls():
    tests = calls([1, 2], 3, 4)
    assert graded(tests, "\nN 0 1.0 ok [1, 2]\n\nN 1 1.0 ok 3\n\nN 2 1.0 ok 4\n") == ["passed"] * 3
    assert graded(tests, "x\nN 0 1.0 ok [2, 1]\nN 1 1.0 ok 3.0\nN 2 1.0 ok 4\n") == [
        "wrong_answer", "wrong_answer", "passed"]  # 3.0 is not the integer 3
    # each test's own line: an error, an idle timeout, its CPU over time_s
    assert graded(tests, '\nN 0 1.0 error "ValueError: x"\nN 1 0.0 timeout\n') == ["runtime_error", "time_limit", None]
    assert graded(tests, "\nN 0 1500.0 ok [1, 2]\n")[0] == "time_limit"
    # the run ends in test 1: the per-test CPU timer (SIGPROF), or the program left early (sys.exit(0))
    prof = RunResult(verdict="runtime_error", signal=signal.SIGPROF, stdout="\nN 0 1.0 ok [1, 2]\n")
    assert graded(tests, "", prof) == ["passed", "time_limit", None]
    assert graded(tests, "\nN 0 1.0 ok [1, 2]\n") == ["passed", "wrong_answer", None]
    # a forged marker with another nonce is just output
    assert graded(tests, "\nX 0 1.0 ok [1, 2]\n") == ["wrong_answer", None, None]


def test_grade_assert():
    t = Case(kind="assert", script="def check(c): assert c() == 1", entry_point="f")
    assert grade(t, ok("\nN passed\n"), "N")[0] == "passed"
    assert grade(t, ok(""), "N")[0] == "wrong_answer"  # exited 0 without running check
    failed = RunResult(verdict="runtime_error", exit_code=1, stderr="Traceback\nAssertionError\n", detail="AssertionError")
    assert grade(t, failed, "N")[0] == "wrong_answer"
    crashed = RunResult(verdict="runtime_error", exit_code=1, stderr="Traceback\nNameError: f\n", detail="NameError: f")
    assert grade(t, crashed, "N")[0] == "runtime_error"


def test_limits_from_problem():
    from lorafleet.shared.problems import Limits

    lim = RunLimits.from_problem(Limits(time_s=1.5, memory_mb=128))
    assert (lim.time_s, lim.memory_mb, lim.effective_wall_s, lim.idle_s) == (1.5, 128, 9.5, 1.8)
    assert RunLimits.from_problem(None).time_s == 4.0
    assert RunLimits.from_problem(Limits(), wall_s=9).effective_wall_s == 9
    assert lim.wire()["memory_bytes"] == 128 * 1024 * 1024
    batch = lim.for_tests(4)  # call tests run together: the run holds each limit 4 times over
    assert (batch.time_s, batch.idle_s, batch.effective_wall_s) == (6.0, 7.2, 38.0)
