"""What runs inside a sandbox child, in Python: the program, then its test driver (call or assert).

Shared by both engines (the Python one in _server.py, the C one in zygote.c via _zygote.py). Standard
library only, imported as a script's neighbour; imports what it needs lazily so that a lean server
image stays lean. By the time run_program() is called the child is limited, dropped and in its
working directory.
"""

from __future__ import annotations

import atexit
import builtins
import os
import sys
import types

MIN_PATH = "/usr/local/bin:/usr/bin:/bin"


def prepare_children(workdir: str) -> None:
    """Everything every child would set up the same way, done once in the server before any fork.

    One run at a time per server, so the working directory path is the same for every run (it is removed
    and made anew each time); environment, argv, sys.path and the stdio objects are ready-made.
    """
    os.environ.clear()
    os.environ.update(PATH=MIN_PATH, HOME=workdir, TMPDIR=workdir, LANG="C.UTF-8")
    sys.argv = [os.path.join(workdir, "solution.py")]
    sys.path.insert(0, workdir)
    _fresh_stdio()  # on fds 0-2 (/dev/null here); a child dup2s its pipes under them
    # The program's module, empty, already registered as __main__: each child starts from its own copy.
    main = types.ModuleType("__main__")
    main.__file__ = sys.argv[0]
    main.__builtins__ = builtins
    sys.modules["__main__"] = main


def _fresh_stdio() -> None:
    import io

    def stream(fd, mode, line_buffering, errors):
        raw = io.FileIO(fd, mode, closefd=False)
        buf = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
        return io.TextIOWrapper(buf, encoding="utf-8", errors=errors, line_buffering=line_buffering)

    sys.stdin = sys.__stdin__ = stream(0, "r", False, "strict")
    sys.stdout = sys.__stdout__ = stream(1, "w", False, "strict")
    sys.stderr = sys.__stderr__ = stream(2, "w", True, "backslashreplace")


def run_program(payload: bytes, code: str) -> int:
    """Run the program as __main__ (or as module `solution` under a test driver); its exit code.

    payload (JSON; empty for a plain run): {"test": one assert test, "nonce"} or {"calls": the call
    tests of one problem, "nonce", "time_s", "idle_s", "stop_on_error"} (see _run_calls).
    """
    spec = None
    if payload:
        import json

        spec = json.loads(payload)
    path = sys.argv[0]
    main = sys.modules["__main__"]  # made by prepare_children
    if spec:
        main.__name__ = "solution"  # under a test driver the program is imported, not run as a script
    g = main.__dict__
    exit_code = 0
    try:
        exec(compile(code, path, "exec"), g)
        if spec and "calls" in spec:
            _run_calls(spec, g)
        elif spec:
            result = _run_test(spec["test"], g)
            sys.stdout.write("\n" + spec["nonce"] + " " + result + "\n")
    except SystemExit as e:
        exit_code = _exit_code(e)
    except BaseException as e:  # noqa: BLE001 - the program's own error: print it like python does
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__.tb_next if e.__traceback__ else None)
        exit_code = 1
    try:
        threading = sys.modules.get("threading")
        if threading is not None:  # join non-daemon threads, like interpreter exit
            threading._shutdown()  # type: ignore[attr-defined]
        if atexit._ncallbacks():
            atexit._run_exitfuncs()
    except SystemExit as e:
        exit_code = _exit_code(e)
    except BaseException:  # noqa: BLE001
        import traceback

        traceback.print_exc()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001
            exit_code = exit_code or 120
    return exit_code


def _exit_code(e: SystemExit) -> int:
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code & 0xFF
    try:
        print(e.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001
        pass
    return 1


def _run_test(test: dict, g: dict) -> str:
    if test["kind"] == "assert":
        exec(compile(test["script"], "test.py", "exec"), g)
        entry = test.get("entry_point")
        if entry:
            if entry not in g:
                raise NameError(f"name {entry!r} is not defined by the program")
            g["check"](g[entry])
        return "passed"
    raise ValueError(f"unknown test kind {test['kind']!r}")


def _run_calls(spec: dict, g: dict) -> None:
    """The call tests of one problem in this one process, as LeetCode runs them: a fresh `Solution()`
    per test, while the module and class attributes live on from test to test.

    After each test one line goes straight to fd 1: "\n<nonce> <i> <cpu_ms> ok <json>" or
    "... error <json message>" (the traceback goes to stderr), or "... timeout" when the test idled
    past its budget. Each test has its own limits: CPU time_s by ITIMER_PROF (the kernel ends the run
    with SIGPROF: the harness reads the missing line as that test's time limit), and idle_s of wall
    time not spent waiting for a CPU (ITIMER_REAL, checked against the run delay in /proc); the run's
    own limits (the sum over the tests) stay the backstop.
    """
    import json
    import signal
    import time

    nonce, time_s, idle_s = spec["nonce"], spec["time_s"], spec["idle_s"]
    sol = g.get("Solution")
    current = [0, 0.0, 0.0]  # test index, its wall start, the run delay then

    def write(line: str) -> None:
        try:
            sys.stdout.flush()  # the program's own output first, so the lines stay in order
        except BaseException:  # noqa: BLE001
            pass
        data = line.encode()
        while data:
            data = data[os.write(1, data):]

    def idle_check(signum, frame) -> None:
        i, t0, delay0 = current
        idle = time.monotonic() - t0 - (run_delay_s() - delay0)
        if idle >= idle_s:
            write(f"\n{nonce} {i} {time.process_time() * 1000:.1f} timeout\n")
            os._exit(0)
        signal.setitimer(signal.ITIMER_REAL, idle_s - idle + 0.01)

    signal.signal(signal.SIGALRM, idle_check)
    for i, test in enumerate(spec["calls"]):
        name = test["fn_name"]
        args = json.loads(test["args"])
        cpu0 = time.process_time()
        current[:] = [i, time.monotonic(), run_delay_s()]
        signal.setitimer(signal.ITIMER_REAL, idle_s)
        signal.setitimer(signal.ITIMER_PROF, time_s + 0.01)
        try:
            if isinstance(sol, type) and hasattr(sol, name):
                fn = getattr(sol(), name)  # a fresh instance per test
            elif callable(g.get(name)):
                fn = g[name]
            else:
                raise NameError(f"function {name!r} is not defined by the program")
            result = json.dumps(plain(fn(*args)), default=_jsonable)
            outcome = "ok " + result
        except SystemExit:
            raise  # leaving early: the tests without a line never ran
        except BaseException as e:  # noqa: BLE001 - the program's error in this test
            import traceback

            signal.setitimer(signal.ITIMER_PROF, 0)
            traceback.print_exception(type(e), e, e.__traceback__.tb_next if e.__traceback__ else None)
            outcome = "error " + json.dumps(f"{type(e).__name__}: {e}"[:500])
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.setitimer(signal.ITIMER_REAL, 0)
        write(f"\n{nonce} {i} {(time.process_time() - cpu0) * 1000:.1f} {outcome}\n")
        if outcome.startswith("error") and spec.get("stop_on_error"):
            return


def run_delay_s(pid: int | str = "self") -> float:
    """Seconds a process's threads spent runnable but waiting for a CPU (the most of any thread): time the
    machine's load took, not the program. 0 where /proc has no schedstat. The Python engine's server asks
    it of a run's pid; zygote.c's run_delay_s is the same in C."""
    most = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                most = max(most, int(f.read().split()[1]))
        except (OSError, IndexError, ValueError):
            continue
    return most / 1e9


def plain(value):
    """numpy (and other array-likes') scalars and arrays as plain Python values, nested too: `.tolist()`
    (an array, or a numpy scalar, which gives its Python value), else `.item()`; tuples become lists."""
    if value is None or type(value) in (bool, int, float, str):  # np.float64 is a float subclass: converted below
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {_key(plain(k)): plain(v) for k, v in value.items()}
    if callable(getattr(value, "tolist", None)):
        try:
            return plain(value.tolist())
        except Exception:  # noqa: BLE001 - not numpy's tolist after all
            pass
    if callable(getattr(value, "item", None)):
        try:
            return plain(value.item())
        except Exception:  # noqa: BLE001
            pass
    return value


def _key(k):
    return k if k is None or isinstance(k, (str, int, float, bool)) else str(k)


def _jsonable(value):
    if isinstance(value, (set, frozenset)):
        try:
            return sorted(value)
        except TypeError:
            return list(value)
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", errors="replace")
    if hasattr(value, "__iter__"):
        return list(value)
    return repr(value)
