"""Real hostile programs (tests/fixtures/sandbox/hostile/) against the real sandbox.

Each gets the verdict it deserves and leaves nothing behind: no process, no file outside the sandbox,
no temp directory, no open descriptor in the harness. Bounded so they can't hurt a shared machine:
small CPU/wall/memory limits, processes capped per run.
"""

from __future__ import annotations

import json
import os
import sys
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from lorafleet.shared.problems import TestCase as Case
from lorafleet.shared.sandbox import IsolationUnavailable, RunLimits, RunResult, Sandbox, machine_workers, zygote_build
from lorafleet.shared.sandbox.models import missing_layers

HOSTILE = Path(__file__).resolve().parents[2] / "fixtures" / "sandbox" / "hostile"
FAST = RunLimits(time_s=1, wall_s=3, memory_mb=256, processes=16)
SECRET = "s3cret-the-harness-holds"
ANSWER = "the-answer-4242"
IS_ROOT = os.geteuid() == 0  # root mode (uid drop) or, as an ordinary user, rootless mode (user namespace)


@pytest.fixture(scope="module", params=["c", "python"], ids=["c-engine", "python-engine"])
def sandbox(request):
    """Both engines (zygote.c, the default where it builds, and the portable _server.py) face every hostile."""
    sb = Sandbox(engine=request.param)
    yield sb
    assert {s.engine for s in sb.servers()} <= {request.param}
    sb.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """What the hostile programs aim at: a listener, a secret file, a writable dir, a victim process."""
    root = tmp_path_factory.mktemp("hostile")
    writable = root / "world-writable"
    writable.mkdir()
    writable.chmod(0o777)
    secret = root / "secret.txt"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    expected = root / "expected_output.txt"
    expected.write_text(ANSWER)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    victim = subprocess.Popen(["sleep", "600"], start_new_session=True)
    env = {
        "root": root,
        "listener": listener,
        "victim": victim,
        "subs": {
            "TARGETS": [str(writable / "escape.txt"), "/etc/lorafleet-sandbox-escape", "../escape.txt",
                        str(root / "escape.txt")],
            "PORT": listener.getsockname()[1],
            "HOST_PID": victim.pid,
            "HARNESS_PID": os.getpid(),
            # The test's own files: one under /tmp, one world-readable in the project tree.
            "PATHS": [str(expected), str(root / "problems.jsonl"), str(HOSTILE.parent / "expected_output.txt")],
            "SECRET": str(secret),
        },
    }
    yield env
    victim.kill()
    victim.wait()
    listener.close()


def program(name: str, subs: dict) -> str:
    text = (HOSTILE / f"{name}.py").read_text()
    for key, value in subs.items():
        text = text.replace(f"__{key}__", repr(value))
    return text


def uid_processes(uids: set[int]) -> list[int]:
    """Host pids whose real uid is one of the sandbox's run uids."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) in uids:
                            out.append(int(d))
                        break
        except OSError:
            continue
    return out


def run_uids(sb: Sandbox) -> set[int]:
    return {s.uid for s in sb.servers() if "uid_drop" in s.layers}


def namespace_processes(pid1: int) -> list[int]:
    """Every process of a server's pid namespace but its pid 1 (host pids, by walking its descendants)."""
    out, todo = [], [pid1]
    while todo:
        p = todo.pop()
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                kids = [int(x) for x in open(f"/proc/{p}/task/{tid}/children").read().split()]
                out += kids
                todo += kids
        except OSError:
            continue
    return out


@dataclass
class Hostile:
    name: str
    verdicts: set[str]
    check: Callable[[RunResult, dict], None] = lambda r, w: None


def check_output_cap(r, w):
    assert len(r.stdout.encode()) == FAST.output_bytes and r.stdout_truncated


def check_big_file(r, w):
    assert "File too large" in r.stderr


def check_write_outside(r, w):
    for path in w["subs"]["TARGETS"]:
        assert not Path(path).exists(), f"the program wrote {path} on the host"
    if "mount_namespace" in r.isolation:
        assert "WROTE /etc" not in r.stdout


def check_env(r, w):
    env = json.loads(r.stdout)
    assert set(env) <= {"PATH", "HOME", "LANG", "TMPDIR"}
    assert SECRET not in r.stdout


def check_no_connection(r, w):
    assert "CONNECTED" not in r.stdout
    with pytest.raises(TimeoutError):
        w["listener"].accept()


def check_victims_alive(r, w):
    assert w["victim"].poll() is None, "the program killed a host process"
    assert f"killed {w['subs']['HOST_PID']}" not in r.stdout or "pid_namespace" in r.isolation


def check_secret(r, w):
    assert SECRET not in r.stdout and SECRET not in r.stderr
    assert r.stdout.count("denied") == 2


def check_kernel_surface(r, w):
    if "seccomp" not in r.isolation:
        # Without the filter (the Python engine) PTRACE_TRACEME makes the server its tracer and the next
        # signal stops it: contained by the wall clock (time_limit), nothing left behind (assert_clean).
        return
    errnos = [line.split()[1] for line in r.stdout.splitlines() if len(line.split()) == 2 and line.split()[1].isdigit()]
    assert r.verdict == "ok" and errnos == ["1"] * 10, r.stdout  # every reach refused with EPERM
    assert "thread ran" in r.stdout and "fork exit 7" in r.stdout, r.stdout  # threads (clone3 -> clone) and fork work


HOSTILES = [
    Hostile("infinite_loop", {"time_limit"}),
    Hostile("busy_threads", {"time_limit"}),
    Hostile("fork_bomb", {"time_limit"}),
    Hostile("memory_bomb", {"memory_limit"}),
    Hostile("big_file", {"runtime_error"}, check_big_file),
    Hostile("write_outside", {"ok"}, check_write_outside),
    Hostile("dump_env", {"ok"}, check_env),
    Hostile("connect_listener", {"runtime_error"}, check_no_connection),
    Hostile("daemon", {"ok"}),
    Hostile("ignore_sigterm", {"time_limit"}),
    Hostile("kill_others", {"ok"}, check_victims_alive),
    # Python 3.11 keeps Python frames off the C stack: 10^6 levels fit in ~150 MiB and finish.
    Hostile("deep_recursion", {"ok"}, lambda r, w: r.stdout == "1000000\n" or pytest.fail(r.stdout)),
    Hostile("huge_output", {"output_limit"}, check_output_cap),
    Hostile("read_secret", {"ok"}, check_secret),
    Hostile("kernel_surface", {"ok", "time_limit"}, check_kernel_surface),
]


def assert_clean(sb: Sandbox) -> None:
    """No process of any run uid on the host, no process of a run in any server's pid namespace, and each
    server's private /tmp holds only its empty work root."""
    assert uid_processes(run_uids(sb)) == []
    for server in sb.servers():
        if "pid_namespace" in server.layers:  # rootless: the run shares the caller's uid, so look inside
            inner = int(open(f"/proc/{server.pid}/task/{server.pid}/children").read().split()[0])
            assert len(namespace_processes(inner)) <= 1  # at most the next run's idle pre-forked child
    for server in sb.servers():
        if "private_tmp" not in server.layers:
            continue
        inner = open(f"/proc/{server.pid}/task/{server.pid}/children").read().split()
        tmp = Path(f"/proc/{inner[0]}/root/tmp")
        # Besides the work root, only the read-only bind of an interpreter/venv living under /tmp.
        python_in_tmp = {
            Path(d).resolve().relative_to("/tmp").parts[0]
            for d in (sys.prefix, sys.base_prefix)
            if Path(d).resolve().is_relative_to("/tmp")
        }
        assert sorted(p.name for p in tmp.iterdir()) == sorted({Path(server.workroot).name} | python_in_tmp)
        assert list((tmp / Path(server.workroot).name).iterdir()) == []


@pytest.mark.parametrize("hostile", HOSTILES, ids=lambda h: h.name)
def test_hostile_program_is_contained(sandbox, world, hostile):
    result = sandbox.run(program(hostile.name, world["subs"]), "", FAST)
    assert result.verdict in hostile.verdicts, (result.verdict, result.detail, result.stderr[-500:])
    hostile.check(result, world)
    assert_clean(sandbox)


def test_reading_the_expected_output_gets_nothing(sandbox, world):
    problem_file = world["root"] / "problems.jsonl"
    test = Case(kind="stdio", input="", output=ANSWER)
    problem_file.write_text(json.dumps({"tests": [test.model_dump()]}))
    assert (HOSTILE.parent / "expected_output.txt").read_text().strip() == ANSWER
    j = sandbox.judge(program("read_expected", world["subs"]), [test], FAST)
    assert "private_root" in j.isolation  # root and rootless alike
    assert j.verdict == "wrong_answer", j
    assert ANSWER not in j.detail.split("got")[-1]


def test_all_hostiles_at_twice_the_cores_leave_nothing_behind(sandbox, world):
    workers = 2 * machine_workers()
    sandbox.warm(workers)
    me = f"/proc/{os.getpid()}/fd"
    fds_before = len(os.listdir(me))
    servers_before = {s.pid for s in sandbox.servers()}
    host_tmp_before = set(os.listdir("/tmp"))
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda h: sandbox.run(program(h.name, world["subs"]), "", FAST), HOSTILES * 2))
    for hostile, result in zip(HOSTILES * 2, results):
        assert result.verdict in hostile.verdicts, (hostile.name, result.verdict, result.detail)
        hostile.check(result, world)
    assert {s.pid for s in sandbox.servers()} == servers_before  # no server died or leaked
    assert len(os.listdir(me)) == fds_before
    assert_clean(sandbox)
    uids = run_uids(sandbox)
    new = set(os.listdir("/tmp")) - host_tmp_before
    assert not [n for n in new if os.lstat(f"/tmp/{n}").st_uid in uids]
    assert world["victim"].poll() is None
    # The sandbox still works after all that.
    assert sandbox.run("print(int(input()) * 2)", "21\n").stdout == "42\n"


def test_closing_the_sandbox_ends_every_server_and_namespace():
    sb = Sandbox()
    sb.run("import os\nif os.fork() == 0:\n    import time; time.sleep(60)\n", "", FAST)
    sb.warm(2)
    pids = [s.pid for s in sb.servers()]
    roots = [s.workroot for s in sb.servers()]
    sb.close()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()
    for root in roots:
        assert not Path(root).exists()


@pytest.mark.parametrize(
    ("namespaces", "drop"), [(False, True), (False, False)], ids=["no-namespaces", "no-namespaces-no-uid-drop"]
)
def test_fewer_layers_still_contain_and_are_reported(world, namespaces, drop):
    """Where namespaces (or root) are missing the sandbox still runs, says which layers are missing,
    still kills daemons and leaves no files, and require_isolation refuses to run."""
    with pytest.raises(IsolationUnavailable, match="LORAFLEET_SANDBOX_ALLOW_REDUCED=1"):  # not without the opt-in
        Sandbox(namespaces=namespaces, drop_privileges=drop, allow_reduced=False).run("print(1)")
    sb = Sandbox(namespaces=namespaces, drop_privileges=drop, allow_reduced=True)
    try:
        r = sb.run(program("daemon", world["subs"]), "", FAST)
        assert r.verdict == "ok"
        assert "pid_namespace" not in r.isolation and "net_namespace" not in r.isolation
        assert ("uid_drop" in r.isolation) == (drop and IS_ROOT)
        assert_no_descendants_but_servers(sb)
        assert uid_processes(run_uids(sb)) == []
        env = sb.run(program("dump_env", world["subs"]), "", FAST)
        check_env(env, world)
        if drop and IS_ROOT:
            check_secret(sb.run(program("read_secret", world["subs"]), "", FAST), world)
            r = sb.run(program("kill_others", world["subs"]), "", FAST)
            check_victims_alive(r, world)
        # With the C module built (engine auto), the reduced modes still get the seccomp filter.
        built = zygote_build.zygote_library() is not None
        assert ("seccomp" in env.isolation) == built
        surface = sb.run(program("kernel_surface", world["subs"]), "", FAST)
        # (With a uid drop but no mount namespace, a Python under /root (0700) offers the dropped run only
        # the preloaded modules: no ctypes, so the program can't even try. Without the drop it can.)
        if built and "ModuleNotFoundError" not in surface.stderr:
            check_kernel_surface(surface, world)
        with pytest.raises(IsolationUnavailable, match="pid_namespace"):
            sb.run("print(1)", "", RunLimits(require_isolation=True))
        workroots = [s.workroot for s in sb.servers()]
        for root in workroots:
            assert os.listdir(root) == []
    finally:
        sb.close()
    for root in workroots:
        assert not Path(root).exists()


def assert_no_descendants_but_servers(sb: Sandbox) -> None:
    for server in sb.servers():
        kids = open(f"/proc/{server.pid}/task/{server.pid}/children").read().split()
        assert kids == [], f"server {server.pid} still has children {kids}"


def test_require_isolation_runs_when_every_layer_is_there(sandbox):
    if missing_layers(sandbox.layers()):  # the Python engine has no seccomp filter
        with pytest.raises(IsolationUnavailable):
            sandbox.run("print(1)", "", RunLimits(require_isolation=True))
        return
    assert sandbox.run("print(1)", "", RunLimits(require_isolation=True)).stdout == "1\n"
    assert ("uid_drop" if IS_ROOT else "user_namespace") in sandbox.layers()
