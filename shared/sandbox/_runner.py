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
    """Run the program as __main__ (or as module `solution` under a test driver); its exit code."""
    spec = None
    if payload:
        import json

        spec = json.loads(payload)
    test = spec["test"] if spec else None
    path = sys.argv[0]
    main = sys.modules["__main__"]  # made by prepare_children
    if test is not None:
        main.__name__ = "solution"  # under a test driver the program is imported, not run as a script
    g = main.__dict__
    exit_code = 0
    try:
        exec(compile(code, path, "exec"), g)
        if test is not None:
            result = _run_test(test, g)
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
    import json

    if test["kind"] == "call":
        name = test["fn_name"]
        sol = g.get("Solution")
        if isinstance(sol, type) and hasattr(sol, name):
            fn = getattr(sol(), name)
        elif callable(g.get(name)):
            fn = g[name]
        else:
            raise NameError(f"function {name!r} is not defined by the program")
        result = fn(*json.loads(test["args"]))
        return json.dumps(result, default=_jsonable)
    if test["kind"] == "assert":
        exec(compile(test["script"], "test.py", "exec"), g)
        entry = test.get("entry_point")
        if entry:
            if entry not in g:
                raise NameError(f"name {entry!r} is not defined by the program")
            g["check"](g[entry])
        return "passed"
    raise ValueError(f"unknown test kind {test['kind']!r}")


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
