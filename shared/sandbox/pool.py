"""Harness side: warm fork servers, a pool of them, and the Sandbox that runs and judges code on it."""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.problems import TestCase
from lorafleet.shared.sandbox import _server, _wire
from lorafleet.shared.sandbox._server import IMAGES
from lorafleet.shared.sandbox.images import image_for
from lorafleet.shared.sandbox.models import ALL_LAYERS, Judgement, RunLimits, RunResult, missing_layers, reduced
from lorafleet.shared.sandbox.verdicts import CallGrade, grade, grade_calls, run_result
from lorafleet.shared.sandbox.zygote_build import engine_setting, zygote_library

SERVER_PATH = Path(_server.__file__).resolve()
SERVER_ENV = {"PATH": _server.MIN_PATH, "LANG": "C.UTF-8"}
STARTUP_TIMEOUT_S = 60.0
RECV_SIZE = 256 * 1024
log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
JudgeItem = tuple  # (code, tests) | (code, tests, limits) | (code, tests, limits, exact)


class IsolationUnavailable(LorafleetError):
    """`require_isolation` was asked for and a layer is missing."""


def machine_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class ServerDied(Exception):
    pass


class ForkServer:
    """One warm server process (and, with namespaces, its own pid/net/mount/ipc/uts namespaces)."""

    def __init__(self, namespaces: bool = True, drop_privileges: bool = True, zygote: Path | None = None,
                 image: str = "full", cpu: int | None = None) -> None:
        ours, theirs = socket.socketpair()
        args = [sys.executable, "-I", str(SERVER_PATH), str(theirs.fileno()), "--image", image]
        if zygote is not None:
            args += ["--zygote", str(zygote)]
        if cpu is not None:
            args += ["--cpu", str(cpu)]
        self.image = image
        if not namespaces:
            args.append("--no-namespaces")
        if not drop_privileges:
            args.append("--no-drop")
        try:
            self.proc = subprocess.Popen(
                args, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env=SERVER_ENV, cwd="/", start_new_session=True,
            )
        finally:
            theirs.close()
        self.sock = ours
        self.sock.settimeout(STARTUP_TIMEOUT_S)
        try:
            hello = _wire.recv_msg(self.sock)
        except OSError as e:
            self.close()
            raise ServerDied(f"sandbox server did not start: {e}") from e
        if hello is None:
            self.close()
            raise ServerDied(f"sandbox server exited at start (code {self.proc.wait()})")
        info = hello[0]
        self.layers: list[str] = [x for x in ALL_LAYERS if x in info["layers"]]
        self.uid: int = info["uid"]
        self.workroot: str = info["workroot"]
        self.pidns: bool = info["pidns"]
        self.engine: str = info["engine"]  # "c" (zygote.c) or "python" (_server.py)
        self.modules: frozenset[str] = frozenset(info["modules"])  # what a program finds imported
        self.blocker: str | None = info.get("blocker")  # why namespaces could not be made, if they weren't
        self.pid = self.proc.pid

    def execute(self, code: str, stdin: str, limits: RunLimits, payload: bytes) -> tuple[dict, bytes, bytes]:
        """(head as run_result() reads it, stdout, stderr) of one run."""
        raw = _wire.pack_request(limits.wire(), code.encode("utf-8", errors="surrogatepass"),
                                 stdin.encode("utf-8", errors="surrogatepass"), payload)
        self.sock.settimeout(limits.effective_wall_s + 30.0)
        try:
            self.sock.sendall(raw)
            data = b""
            while len(data) < _wire.RESPONSE.size:  # usually one recv: header and outputs
                more = self.sock.recv(RECV_SIZE)
                if not more:
                    raise ServerDied("sandbox server exited during a run")
                data += more
            head, sizes = _wire.unpack_response(data[:_wire.RESPONSE.size])
            missing = _wire.RESPONSE.size + sum(sizes) - len(data)
            if missing > 0:
                rest = _wire.recv_exact(self.sock, missing)
                if rest is None:
                    raise ServerDied("sandbox server exited during a run")
                data += rest
        except OSError as e:
            raise ServerDied(f"sandbox server failed: {e}") from e
        view, texts = memoryview(data)[_wire.RESPONSE.size:], []
        for n in sizes:
            texts.append(bytes(view[:n]))
            view = view[n:]
        setup, error, out, err = texts
        return _wire.finish_head(head, setup, error), out, err

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # the namespace's pid 1 dies with it (PDEATHSIG)
                self.proc.wait(timeout=5)
            if not self.pidns:  # on the host: its working root would outlive a killed server
                shutil.rmtree(self.workroot, ignore_errors=True)


class Sandbox:
    """Runs untrusted code on a pool of warm fork servers. Thread-safe; `close()` stops the servers.

    engine: "auto" | "c" | "python" (default $LORAFLEET_SANDBOX_ENGINE, see zygote_build).
    allow_reduced: run even where a server can only have the reduced mode (no namespaces or private root:
    the program sees the host's tree with the caller's rights); default $LORAFLEET_SANDBOX_ALLOW_REDUCED
    (off): such a server is refused with IsolationUnavailable naming what blocks the namespaces.
    pin_cpus: each server and its children stay on one CPU, spread over the CPUs this process may use
    (fork's page-table copy and the child's copy-on-write faults stay on one CPU's caches, and fork
    needs no cross-CPU TLB flush: ~10% less CPU per run). Default $LORAFLEET_SANDBOX_PIN (on); turn it
    off where other work owns some CPUs.
    """

    def __init__(self, namespaces: bool = True, drop_privileges: bool = True, max_servers: int = 64,
                 engine: str | None = None, pin_cpus: bool | None = None, allow_reduced: bool | None = None) -> None:
        self.namespaces = namespaces
        if allow_reduced is None:
            allow_reduced = allow_reduced_setting()
        self.allow_reduced = allow_reduced
        self.drop_privileges = drop_privileges
        self.max_servers = max_servers
        self.engine = engine or engine_setting()
        if pin_cpus is None:
            pin_cpus = os.environ.get("LORAFLEET_SANDBOX_PIN", "1").lower() not in ("0", "false", "no")
        self._cpus = sorted(os.sched_getaffinity(0)) if pin_cpus and hasattr(os, "sched_getaffinity") else []
        self._started = 0
        self._idle: dict[str, list[ForkServer]] = {image: [] for image in IMAGES}
        self._all: set[ForkServer] = set()
        self._cond = threading.Condition()
        self._closed = False

    # -------------------------------------------------------------- pool

    def _acquire(self, image: str = "full") -> ForkServer:
        evict = None
        with self._cond:
            while True:
                if self._closed:
                    raise LorafleetError("the sandbox is closed")
                if self._idle[image]:
                    return self._idle[image].pop()
                if len(self._all) < self.max_servers:
                    break
                other = next((idle for idle in self._idle.values() if idle), None)
                if other:  # full of idle servers of the other image: make room
                    evict = other.pop()
                    self._all.discard(evict)
                    break
                self._cond.wait()
            cpu = self._cpus[(os.getpid() + self._started) % len(self._cpus)] if self._cpus else None
            self._started += 1
        if evict is not None:
            evict.close()
        try:
            server = self._start_server(image, cpu)
        except BaseException:
            with self._cond:
                self._cond.notify()
            raise
        with self._cond:
            self._all.add(server)
        return server

    def _start_server(self, image: str, cpu: int | None) -> ForkServer:
        zygote = zygote_library(self.engine)
        try:
            server = ForkServer(self.namespaces, self.drop_privileges, zygote, image, cpu)
        except ServerDied:
            if zygote is None or self.engine == "c":
                raise
            log.warning("the sandbox's C engine did not start; using the Python engine", exc_info=True)
            self.engine = "python"
            server = ForkServer(self.namespaces, self.drop_privileges, None, image, cpu)
        lacking = reduced(server.layers)
        if lacking and not self.allow_reduced:
            server.close()
            raise IsolationUnavailable(reduced_mode_message(lacking, server.blocker, self.namespaces))
        return server

    def _release(self, server: ForkServer, healthy: bool) -> None:
        with self._cond:
            if healthy and not self._closed:
                self._idle[server.image].append(server)
            else:
                self._all.discard(server)
            self._cond.notify()
        if not healthy or self._closed:
            server.close()

    def warm(self, n: int, images: Sequence[str] = tuple(IMAGES)) -> None:
        """Start n servers of each image now (so the first runs don't pay the start-up)."""
        servers = [self._acquire(image) for image in images for _ in range(n)]
        for s in servers:
            self._release(s, True)

    def servers(self) -> list[ForkServer]:
        with self._cond:
            return list(self._all)

    def layers(self) -> list[str]:
        server = self._acquire()
        self._release(server, True)
        return list(server.layers)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            servers, self._all = list(self._all), set()
            self._idle = {image: [] for image in IMAGES}
            self._cond.notify_all()
        for s in servers:
            s.close()

    # -------------------------------------------------------------- runs

    def _execute(self, code: str, stdin: str, limits: RunLimits, spec: dict | None) -> RunResult:
        """One run; spec is the test driver's payload ({"test" | "calls", "nonce", ...}), None for a plain run."""
        try:
            server = self._acquire(image_for(code, spec))
        except ServerDied as e:
            return RunResult(verdict="sandbox_error", detail=str(e))
        if limits.require_isolation:
            missing = missing_layers(server.layers)
            if missing:
                self._release(server, True)
                how = (f"{server.blocker or 'namespaces are off'}; see docs/sandbox.md" if missing != ["seccomp"] else
                       "the seccomp filter comes with the C engine: install a C compiler and Python's headers")
                raise IsolationUnavailable(
                    f"refusing to run: isolation layers unavailable: {', '.join(missing)} "
                    f"({how}, or drop --require-isolation)"
                )
        payload = json.dumps(spec).encode() if spec is not None else b""
        try:
            head, out, err = server.execute(code, stdin, limits, payload)
        except ServerDied as e:
            self._release(server, False)
            return RunResult(verdict="sandbox_error", detail=str(e), isolation=server.layers)
        self._release(server, True)
        return run_result(head, out, err, limits, list(server.layers))

    def run(self, code: str, stdin: str = "", limits: RunLimits | None = None) -> RunResult:
        return self._execute(code, stdin, limits or RunLimits(), None)

    def judge(self, code: str, tests: Sequence[TestCase], limits: RunLimits | None = None, exact: bool = False,
              fail_fast: bool = True) -> Judgement:
        """Run the tests (stopping at the first failure unless fail_fast=False); the first failure decides.

        A problem's call tests run together in one process (a fresh `Solution()` per test, as LeetCode
        does; see _judge_calls); stdio and assert tests one process each.
        """
        limits = limits or RunLimits()
        t0 = time.monotonic()
        if not tests:
            return Judgement(verdict="sandbox_error", passed_tests=0, total_tests=0, detail="no tests to judge")
        grades: list[CallGrade] = [None] * len(tests)
        cpu_ms, layers = 0.0, []
        calls = [i for i, t in enumerate(tests) if t.kind == "call"]
        if calls:
            result, call_grades = self._judge_calls(code, [tests[i] for i in calls], limits, exact, fail_fast)
            cpu_ms, layers = result.cpu_ms, result.isolation
            for i, g in zip(calls, call_grades):
                grades[i] = g
        for i, test in enumerate(tests):
            if test.kind == "call":
                continue
            if any(g is not None and g[0] != "passed" for g in grades) and (
                    fail_fast or any(g is not None and g[0] in ("time_limit", "sandbox_error") for g in grades)):
                break
            nonce = secrets.token_hex(16)
            stdin, spec = _wire_test(test, nonce)
            result = self._execute(code, stdin, limits, spec)
            layers = result.isolation
            cpu_ms += result.cpu_ms
            grades[i] = grade(test, result, nonce, exact)
        wall_ms = (time.monotonic() - t0) * 1000
        failed = [(i, g) for i, g in enumerate(grades) if g is not None and g[0] != "passed"]
        if fail_fast and failed:  # as if it had stopped there: a batch's later tests don't count
            grades = grades[: failed[0][0]]
        passed = sum(1 for g in grades if g is not None and g[0] == "passed")
        if not failed:
            return Judgement(verdict="passed", passed_tests=passed, total_tests=len(tests), wall_ms=wall_ms,
                             cpu_ms=cpu_ms, isolation=layers)
        i, (verdict, detail) = failed[0]
        return Judgement(verdict=verdict, passed_tests=passed, total_tests=len(tests), detail=f"test {i}: {detail}",
                         wall_ms=wall_ms, cpu_ms=cpu_ms, failed_test=i, isolation=layers)

    def _judge_calls(self, code: str, tests: list[TestCase], limits: RunLimits, exact: bool,
                     fail_fast: bool) -> tuple[RunResult, list[CallGrade]]:
        """One problem's call tests in one run: the run holds len(tests) times each limit, the driver
        gives each test its own time_s and idle_s (_runner._run_calls)."""
        nonce = secrets.token_hex(16)
        for t in tests:
            if not t.fn_name:
                raise LorafleetError("a 'call' test needs fn_name")
        spec = {"calls": [{"fn_name": t.fn_name, "args": json.dumps(t.args or [])} for t in tests], "nonce": nonce,
                "time_s": limits.time_s, "idle_s": limits.idle_s, "stop_on_error": fail_fast}
        run_limits = limits.for_tests(len(tests))
        result = self._execute(code, "", run_limits, spec)
        return result, grade_calls(tests, result, nonce, limits.time_s, limits.idle_s, exact)

    def judge_many(self, items: Iterable[JudgeItem], limits: RunLimits | None = None, workers: int | None = None,
                   exact: bool = False, fail_fast: bool = True) -> list[Judgement]:
        """Judge many (code, tests[, limits[, exact]]) items on `workers` servers; results in input order."""
        items = list(items)
        workers = max(1, min(workers or machine_workers(), len(items) or 1))

        def one(item: JudgeItem) -> Judgement:
            code, tests, *rest = item
            lim = rest[0] if rest and rest[0] is not None else limits
            ex = rest[1] if len(rest) > 1 else exact
            return self.judge(code, tests, lim, ex, fail_fast)

        return map_in_threads(one, items, workers)

    async def ajudge_many(self, items: Iterable[JudgeItem], limits: RunLimits | None = None,
                          workers: int | None = None, exact: bool = False, fail_fast: bool = True) -> list[Judgement]:
        return await asyncio.to_thread(self.judge_many, list(items), limits, workers, exact, fail_fast)

    async def arun(self, code: str, stdin: str = "", limits: RunLimits | None = None) -> RunResult:
        return await asyncio.to_thread(self.run, code, stdin, limits)

    async def ajudge(self, code: str, tests: Sequence[TestCase], limits: RunLimits | None = None,
                     exact: bool = False) -> Judgement:
        return await asyncio.to_thread(self.judge, code, tests, limits, exact)


def allow_reduced_setting() -> bool:
    return os.environ.get("LORAFLEET_SANDBOX_ALLOW_REDUCED", "0").strip().lower() in ("1", "true", "yes")


def reduced_mode_message(lacking: list[str], blocker: str | None, namespaces: bool = True) -> str:
    why = blocker or ("namespaces were turned off (namespaces=False or LORAFLEET_SANDBOX_NAMESPACES=0)"
                      if not namespaces else "namespaces are unavailable")
    return (f"refusing to run generated code in the sandbox's reduced mode (missing: {', '.join(lacking)}): {why}. "
            "Allow namespaces (see docs/sandbox.md, 'Three modes'), or set LORAFLEET_SANDBOX_ALLOW_REDUCED=1 to run "
            "programs with the host's tree visible and these layers missing")


def check_isolation(sandbox: Sandbox | None = None) -> list[str]:
    """Start one server now and return its layers; IsolationUnavailable where only the reduced mode is possible
    and it was not allowed (a service calls this at start-up, so that it refuses to start rather than fail
    on its first program)."""
    return (sandbox or default_sandbox()).layers()


def map_in_threads(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """fn over items on `workers` long-lived threads; results in input order, the first error re-raised.

    The threads pull indices from one shared iterator (next() on a range iterator is atomic under the
    GIL): a future per item, as ThreadPoolExecutor.map makes, costs the harness about as much CPU as a
    short sandbox run's own Python.
    """
    if workers <= 1:
        return [fn(item) for item in items]
    results: list = [None] * len(items)
    shared = iter(range(len(items)))
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for i in shared:
                results[i] = fn(items[i])
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)

    threads = [threading.Thread(target=worker, name=f"sandbox-{k}", daemon=True) for k in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def _wire_test(test: TestCase, nonce: str) -> tuple[str, dict | None]:
    """(stdin, the driver's payload) for one stdio or assert test (call tests: Sandbox._judge_calls)."""
    if test.kind == "stdio":
        return test.input or "", None
    if not test.script:
        raise LorafleetError("an 'assert' test needs script")
    return "", {"test": {"kind": "assert", "script": test.script, "entry_point": test.entry_point}, "nonce": nonce}


_default: Sandbox | None = None
_default_lock = threading.Lock()


def default_sandbox() -> Sandbox:
    """The process-wide sandbox (full isolation where the machine allows), closed at exit.

    LORAFLEET_SANDBOX_NAMESPACES=0 runs it without namespaces (for hosts that forbid them; the
    missing layers are reported in every result).
    """
    global _default
    with _default_lock:
        if _default is None or _default._closed:
            namespaces = os.environ.get("LORAFLEET_SANDBOX_NAMESPACES", "1").lower() not in ("0", "false", "no")
            _default = Sandbox(namespaces=namespaces)
            atexit.register(_default.close)
        return _default


def _forget_default_after_fork() -> None:
    # A forked child must not share the parent's server sockets: it starts its own servers if it judges.
    global _default, _default_lock
    _default, _default_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_default_after_fork)
