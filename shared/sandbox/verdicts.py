"""Pure mapping from what the fork server observed to verdicts (run level and test level)."""

from __future__ import annotations

import json
import signal as _signal
from typing import Any

from lorafleet.shared.problems import TestCase
from lorafleet.shared.sandbox.compare import outputs_match, values_match
from lorafleet.shared.sandbox.models import JudgeVerdict, RunLimits, RunResult

_MEMORY_MARKERS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory")


def run_result(head: dict, stdout: bytes, stderr: bytes, limits: RunLimits, layers: list[str]) -> RunResult:
    """Turn the server's raw observation of one run into a RunResult with its verdict."""
    if "error" in head:
        return RunResult(verdict="sandbox_error", detail=head["error"], isolation=layers)
    out = stdout.decode("utf-8", errors="replace")
    err = stderr.decode("utf-8", errors="replace")
    code, sig = head["exit_code"], head["signal"]
    cpu_ms = head["cpu_ms"]
    verdict, detail = "ok", ""
    if head["setup_error"]:
        verdict, detail = "sandbox_error", f"sandbox setup failed: {head['setup_error']}"
    elif head["killed_for"] == "output":
        which = "stdout" if head["stdout_truncated"] else "stderr"
        cap = limits.output_bytes if which == "stdout" else limits.stderr_bytes
        verdict, detail = "output_limit", f"{which} exceeded {cap} bytes"
    elif head["killed_for"] == "wall":
        verdict, detail = "time_limit", f"wall clock exceeded {limits.effective_wall_s:g} s"
    elif head["killed_for"] == "idle":
        verdict, detail = "time_limit", (f"idle past {limits.idle_s:g} s (time limit + {limits.idle_slack_s:g} s) "
                                         "of wall time not spent waiting for a CPU")
    elif sig == _signal.SIGXCPU or (sig == _signal.SIGKILL and cpu_ms >= limits.time_s * 900) or cpu_ms > limits.time_s * 1000:
        # SIGXCPU is RLIMIT_CPU's soft limit, SIGKILL (with the CPU spent) its hard one.
        verdict, detail = "time_limit", f"CPU time limit of {limits.time_s:g} s exceeded"
    elif (code not in (0, None) or sig is not None) and _out_of_memory(err, head, limits):
        verdict, detail = "memory_limit", f"memory limit of {limits.memory_mb} MB exceeded"
    elif sig is not None:
        verdict, detail = "runtime_error", f"killed by signal {_signal_name(sig)}"
    elif code != 0:
        verdict, detail = "runtime_error", last_line(err) or f"exit code {code}"
    return RunResult(
        verdict=verdict,
        exit_code=code,
        signal=sig,
        stdout=out,
        stderr=err,
        wall_ms=head["wall_ms"],
        cpu_ms=cpu_ms,
        max_rss_kb=head["maxrss_kb"],
        isolation=layers,
        detail=detail,
        stdout_truncated=head["stdout_truncated"],
        stderr_truncated=head["stderr_truncated"],
    )


def _out_of_memory(stderr: str, head: dict, limits: RunLimits) -> bool:
    tail = stderr[-2000:]
    if any(m in tail for m in _MEMORY_MARKERS):
        return True
    return head["signal"] is not None and head["maxrss_kb"] * 1024 >= 0.9 * limits.memory_mb * 1024 * 1024


def _signal_name(sig: int) -> str:
    try:
        return _signal.Signals(sig).name
    except ValueError:
        return str(sig)


def last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else ""


def split_sentinel(stdout: str, nonce: str) -> tuple[str, str | None]:
    """(program's own stdout, the test driver's payload or None when the test never completed)."""
    idx = stdout.rfind(nonce + " ")
    if idx < 0:
        return stdout, None
    own = stdout[: idx - 1] if idx > 0 and stdout[idx - 1] == "\n" else stdout[:idx]
    return own, stdout[idx + len(nonce) + 1 :].rstrip("\n")


def grade(test: TestCase, result: RunResult, nonce: str, exact: bool = False) -> tuple[JudgeVerdict, str]:
    """The verdict of one test from its run. Pure: no I/O."""
    if result.verdict != "ok" and not (result.verdict == "runtime_error" and test.kind == "assert"):
        return result.verdict, result.detail
    if test.kind == "stdio":
        if outputs_match(result.stdout, test.output or "", exact):
            return "passed", ""
        return "wrong_answer", f"expected {_clip(test.output or '')!r}, got {_clip(result.stdout)!r}"
    _, payload = split_sentinel(result.stdout, nonce)
    if test.kind == "assert":
        if result.verdict == "ok" and payload == "passed":
            return "passed", ""
        err = last_line(result.stderr)
        if result.verdict == "runtime_error" and not err.startswith("AssertionError"):
            return "runtime_error", result.detail
        if payload is None and result.verdict == "ok":
            return "wrong_answer", "the program exited before the tests ran"
        return "wrong_answer", err or "assertion failed"
    raise ValueError(f"call tests are graded together: grade_calls, not grade ({test.kind!r})")


CallGrade = tuple[JudgeVerdict, str] | None  # None: the test never ran (an earlier one ended the run)


def call_lines(stdout: str, nonce: str) -> dict[int, tuple[float, str, str]]:
    """{test index: (cpu_ms, status, data)} from the driver's lines (see _runner._run_calls)."""
    found = {}
    for line in stdout.split("\n"):
        if not line.startswith(nonce + " "):
            continue
        parts = line[len(nonce) + 1:].split(" ", 3)
        try:
            i, cpu_ms, status = int(parts[0]), float(parts[1]), parts[2]
        except (IndexError, ValueError):
            continue
        found.setdefault(i, (cpu_ms, status, parts[3] if len(parts) > 3 else ""))
    return found


def grade_calls(tests: list[TestCase], result: RunResult, nonce: str, time_s: float, idle_s: float,
                exact: bool = False) -> list[CallGrade]:
    """The verdict of each of one problem's call tests, all run in one process (result). Pure.

    A test's own line decides it (its CPU above time_s is a time limit); the first test without a line
    is the one the run ended in: the run's verdict, a time limit when the per-test CPU timer (SIGPROF)
    ended it, and wrong_answer when the program left early (sys.exit) with the run ok. The tests after
    it never ran.
    """
    lines = call_lines(result.stdout, nonce)
    grades: list[CallGrade] = []
    for i, test in enumerate(tests):
        if i not in lines:
            # after a timeout (or an error under fail_fast) the driver ran no more tests
            if i == 0 or lines[i - 1][1] not in ("timeout", "error"):
                grades.append(_ended_in(result, time_s))
            grades += [None] * (len(tests) - len(grades))
            break
        cpu_ms, status, data = lines[i]
        if status == "timeout":
            grades.append(("time_limit", (f"idle past {idle_s:g} s (time limit {time_s:g} s + slack) "
                                          "of wall time not spent waiting for a CPU")))
        elif status == "error":
            grades.append(("runtime_error", _json_text(data)))
        elif cpu_ms > time_s * 1000:
            grades.append(("time_limit", f"CPU time limit of {time_s:g} s exceeded ({cpu_ms:.0f} ms)"))
        else:
            grades.append(_grade_value(test, data, exact))
    return grades


def _ended_in(result: RunResult, time_s: float) -> tuple[JudgeVerdict, str]:
    if result.verdict == "time_limit":
        return "time_limit", result.detail
    if result.signal == _signal.SIGPROF:  # the driver's per-test CPU timer
        return "time_limit", f"CPU time limit of {time_s:g} s exceeded"
    if result.verdict != "ok":
        return result.verdict, result.detail
    return "wrong_answer", "the program exited before the function was called"


def _grade_value(test: TestCase, data: str, exact: bool) -> tuple[JudgeVerdict, str]:
    try:
        value: Any = json.loads(data)
    except json.JSONDecodeError:
        return "wrong_answer", f"return value is not JSON: {_clip(data)!r}"
    if values_match(value, test.expected, exact):
        return "passed", ""
    return "wrong_answer", f"expected {_clip(json.dumps(test.expected))}, got {_clip(data)}"


def _json_text(data: str) -> str:
    try:
        return str(json.loads(data))
    except json.JSONDecodeError:
        return data


def _clip(s: str, n: int = 200) -> str:
    return s if len(s) <= n else s[:n] + "..."
