"""Rootless mode, what a run can reach of the user who runs the sandbox, threads under a memory limit.

Every test here holds in both modes with the same expectations: as root (each run under a uid of its
own) and as an ordinary user (rootless: the caller's uid mapped to root of a user namespace, without
capabilities). CI runs as root, so `test_the_sandbox_suites_pass_as_an_unprivileged_user` reruns the
hostile suite and this file as uid `nobody`.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from lorafleet.shared.sandbox import IsolationUnavailable, RunLimits, Sandbox

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
IS_ROOT = os.geteuid() == 0
QUICK = RunLimits(time_s=2, wall_s=10, memory_mb=256)
THREADS = 16


@pytest.fixture(scope="module", params=["c", "python"], ids=["c-engine", "python-engine"])
def sandbox(request):
    sb = Sandbox(engine=request.param)
    yield sb
    sb.close()


# ------------------------------------------------------------------ what the mode says about itself


def test_the_mode_is_reported_and_the_run_holds_no_capability(sandbox):
    r = sandbox.run("print(open('/proc/self/status').read())", "", QUICK)
    status = dict(line.split(":", 1) for line in r.stdout.splitlines() if ":" in line)
    assert r.verdict == "ok", r
    # Rootless runs as uid 0 of its namespace: the bounding set goes too (a uid-dropped run can't regain any).
    for cap in ("CapEff", "CapPrm", "CapAmb") + (() if IS_ROOT else ("CapBnd",)):
        assert int(status[cap].strip(), 16) == 0, (cap, status[cap])
    assert ("uid_drop" in r.isolation) == IS_ROOT and ("user_namespace" in r.isolation) == (not IS_ROOT)
    assert {"pid_namespace", "mount_namespace", "private_root", "net_namespace", "memory_address_space"} <= set(r.isolation)


# ------------------------------------------------------------------ the caller's own data


@pytest.fixture
def own_data(tmp_path):
    """A 0600 file of the caller's, a file in the caller's home, and another process of the caller's."""
    secret = secrets.token_hex(12)
    private = tmp_path / "private.txt"
    private.write_text(secret)
    private.chmod(0o600)
    home_file = Path.home() / f".lorafleet-sandbox-test-{secrets.token_hex(4)}"
    home_file.write_text(secret)
    home_file.chmod(0o600)
    marker = f"LORAFLEET_VICTIM_{secrets.token_hex(6)}"
    victim = subprocess.Popen(["sleep", "600"], env={"MARK": marker}, start_new_session=True)
    try:
        yield {"secret": secret, "private": private, "home_file": home_file, "victim": victim, "marker": marker}
    finally:
        victim.kill()
        victim.wait()
        home_file.unlink(missing_ok=True)


def test_a_run_cannot_read_the_callers_private_file(sandbox, own_data):
    code = f"try:\n    print(open({str(own_data['private'])!r}).read())\nexcept OSError as e:\n    print('denied', type(e).__name__)\n"
    r = sandbox.run(code, "", QUICK)
    assert r.verdict == "ok" and r.stdout.startswith("denied"), r
    assert own_data["secret"] not in r.stdout


def test_a_run_cannot_read_the_callers_home(sandbox, own_data):
    code = f"""
import os
home = {str(Path.home())!r}
try:
    print(open({str(own_data['home_file'])!r}).read())
except OSError as e:
    print('denied', type(e).__name__)
try:
    print('listed', os.listdir(home))
except OSError as e:
    print('no home', type(e).__name__)
"""
    r = sandbox.run(code, "", QUICK)
    assert r.verdict == "ok" and r.stdout.startswith("denied"), r
    assert own_data["secret"] not in r.stdout and own_data["home_file"].name not in r.stdout


def test_a_run_cannot_see_or_signal_the_callers_other_processes(sandbox, own_data):
    victim = own_data["victim"]
    code = f"""
import os, signal
seen = []
for d in os.listdir('/proc'):
    if d.isdigit():
        try:
            seen.append(open(f'/proc/{{d}}/environ', 'rb').read())
        except OSError:
            pass
print('marker seen' if any({own_data['marker']!r}.encode() in e for e in seen) else 'marker not seen', len(seen))
try:
    os.kill({victim.pid}, signal.SIGKILL)
    print('killed')
except OSError as e:
    print('kill denied', type(e).__name__)
try:
    os.kill(-1, signal.SIGKILL)
except OSError:
    pass
"""
    r = sandbox.run(code, "", QUICK)
    assert r.verdict == "ok", r
    assert "marker not seen" in r.stdout and "kill denied" in r.stdout, r.stdout
    assert victim.poll() is None, "the run killed another process of the caller's"


def test_signalling_the_server_changes_nothing(sandbox):
    """Rootless, the run shares the server's uid: pid 1 of the namespace gets the signals it handles."""
    sandbox.warm(1)  # a server of each image
    before = {s.pid for s in sandbox.servers()}
    code = "import os, signal, time\nfor sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):\n" \
           "    try:\n        os.kill(1, sig)\n    except OSError:\n        pass\ntime.sleep(0.2)\nprint('sent')\n"
    r = sandbox.run(code, "", QUICK)
    assert (r.verdict, r.stdout) == ("ok", "sent\n"), r
    assert sandbox.run("print(2)", "", QUICK).stdout == "2\n"
    assert {s.pid for s in sandbox.servers()} == before


def test_a_run_sets_no_sysctl(sandbox):
    """Rootless, the run's uid owns the server's ipc namespace (kernel.shm*): /proc/sys is read-only."""
    code = """
for path, value in (("/proc/sys/kernel/shmmax", "4096"), ("/proc/sys/kernel/msgmax", "1024"),
                    ("/proc/sys/net/ipv4/ip_forward", "1"), ("/proc/sys/kernel/hostname", "x")):
    try:
        with open(path, "w") as f:
            f.write(value)
        print("WROTE", path)
    except OSError as e:
        print("denied", path, type(e).__name__)
"""
    r = sandbox.run(code, "", QUICK)
    assert r.verdict == "ok" and "WROTE" not in r.stdout and r.stdout.count("denied") == 4, r.stdout


# ------------------------------------------------------------------ memory: threads vs a memory bomb


def test_sixteen_threads_fit_in_256_mib(sandbox):
    code = f"""
import threading
done = []
together = threading.Barrier({THREADS})  # all of them alive at once
def work(i):
    together.wait(timeout=5)
    done.append(sum(range(10000 * (i + 1))))
threads = [threading.Thread(target=work, args=(i,)) for i in range({THREADS})]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(len(done))
"""
    # processes counts threads too (RLIMIT_NPROC): the main thread plus 16.
    r = sandbox.run(code, "", RunLimits(time_s=2, wall_s=10, memory_mb=256, processes=THREADS + 4))
    assert (r.verdict, r.stdout) == ("ok", f"{THREADS}\n"), (r.verdict, r.stderr[-400:])
    assert "memory_address_space" in r.isolation


def test_a_memory_bomb_still_hits_the_limit(sandbox):
    r = sandbox.run("x = []\nwhile True:\n    x.append(bytearray(1 << 20))\n", "", QUICK)
    assert r.verdict == "memory_limit", (r.verdict, r.stderr[-300:])


def test_a_threaded_memory_bomb_still_hits_the_limit(sandbox):
    code = """
import threading
hold = []
def grab():
    while True:
        hold.append(bytearray(1 << 20))
ts = [threading.Thread(target=grab) for _ in range(4)]
for t in ts:
    t.start()
for t in ts:
    t.join()
hold.append(bytearray(64 << 20))  # the threads died of MemoryError (which doesn't end a program): so does main
"""
    r = sandbox.run(code, "", RunLimits(time_s=2, wall_s=10, memory_mb=256, processes=16))
    assert r.verdict == "memory_limit" and r.stderr.splitlines().count("MemoryError") == 5, (r.verdict, r.stderr[-300:])


# ------------------------------------------------------------------ the CLI, as whoever runs the tests


def test_the_cli_runs_with_require_isolation(tmp_path):
    prog = tmp_path / "p.py"
    prog.write_text("print(int(input()) * 3)\n")
    exe = Path(sys.executable).with_name("lorafleet")
    env = {k: v for k, v in os.environ.items() if k != "LORAFLEET_SANDBOX_ALLOW_REDUCED"}
    out = subprocess.run([str(exe), "sandbox", "run", str(prog), "--require-isolation", "--json", "--stdin", "-"],
                         input="14\n", capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    obj = json.loads(out.stdout)
    assert obj["stdout"] == "42\n"
    assert {"pid_namespace", "net_namespace", "mount_namespace", "private_root", "seccomp",
            "uid_drop" if IS_ROOT else "user_namespace"} <= set(obj["isolation"])


# ------------------------------------------------------------------ where user namespaces are forbidden

# Starts as the caller (root: drops to nobody first), makes a user namespace in which it is uid 1000 (no
# capabilities once it execs) and sets user.max_user_namespaces to 0 there: the sandbox below can't
# make its own user namespace, as on a host with the sysctl at 0.
BLOCK_USERNS = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if os.geteuid() == 0:
    nobody = int(sys.argv[1])
    os.setgroups([]); os.setresgid(nobody, nobody, nobody); os.setresuid(nobody, nobody, nobody)
    libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: /proc/self/* belong to us again after the uid change
uid, gid = os.geteuid(), os.getegid()
if libc.unshare(0x10000000) != 0:
    sys.exit(f"unshare: {os.strerror(ctypes.get_errno())}")
for name, text in (("setgroups", "deny"), ("uid_map", f"1000 {uid} 1"), ("gid_map", f"1000 {gid} 1")):
    with open(f"/proc/self/{name}", "w") as f:
        f.write(text)
with open("/proc/sys/user/max_user_namespaces", "w") as f:
    f.write("0")
os.execv(sys.executable, [sys.executable, "-c", sys.argv[2]])
"""
PROBE = """
from lorafleet.shared.sandbox import IsolationUnavailable, Sandbox
try:
    print("RAN", Sandbox().run("print(1)").stdout.strip())
except IsolationUnavailable as e:
    print("REFUSED", e)
r = Sandbox(allow_reduced=True).run("print(1)")
print("REDUCED", r.verdict, ",".join(r.isolation))
"""


def test_without_user_namespaces_it_refuses_and_names_the_setting(unprivileged):
    env = {**unprivileged["env"], "LORAFLEET_SANDBOX_ALLOW_REDUCED": "0"}
    out = subprocess.run([sys.executable, "-c", BLOCK_USERNS, str(unprivileged["uid"]), PROBE], capture_output=True,
                         text=True, timeout=120, env=env, cwd=unprivileged["home"])
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    refused = next(line for line in lines if line.startswith(("RAN", "REFUSED")))
    assert refused.startswith("REFUSED") and "user.max_user_namespaces is 0" in refused, out.stdout
    assert "LORAFLEET_SANDBOX_ALLOW_REDUCED=1" in refused
    reduced = next(line for line in lines if line.startswith("REDUCED")).split()
    assert reduced[1] == "ok" and "pid_namespace" not in reduced[2] and "private_root" not in reduced[2]


# ------------------------------------------------------------------ the containers' seccomp profile

# As a container runtime applies a profile (libseccomp, no_new_privs as allowPrivilegeEscalation: false),
# then exec the probe as an ordinary user: what the sandbox can do under deploy/docker/sandbox-seccomp.json.
UNDER_PROFILE = """
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if os.geteuid() == 0:
    nobody = int(sys.argv[1])
    os.setgroups([]); os.setresgid(nobody, nobody, nobody); os.setresuid(nobody, nobody, nobody)
seccomp = ctypes.CDLL("libseccomp.so.2")
seccomp.seccomp_init.restype = ctypes.c_void_p
seccomp.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
seccomp.seccomp_load.argtypes = [ctypes.c_void_p]
profile = json.loads(sys.argv[2])
assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
ctx = seccomp.seccomp_init(0x7FFF0000)
for rule in profile["syscalls"]:
    assert rule["action"] == "SCMP_ACT_ERRNO"
    for name in rule["names"]:
        nr = seccomp.seccomp_syscall_resolve_name(name.encode())
        if nr >= 0:
            assert seccomp.seccomp_rule_add(ctx, 0x00050000 | rule.get("errnoRet", 1), nr, 0) == 0, name
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
assert seccomp.seccomp_load(ctx) == 0
os.execv(sys.executable, [sys.executable, "-c", sys.argv[3]])
"""
PROFILE = ROOT / "deploy" / "docker" / "sandbox-seccomp.json"


def under_profile(unprivileged, profile: dict) -> list[str]:
    env = {**unprivileged["env"], "LORAFLEET_SANDBOX_ALLOW_REDUCED": "0"}
    out = subprocess.run([sys.executable, "-c", UNDER_PROFILE, str(unprivileged["uid"]), json.dumps(profile), PROBE],
                         capture_output=True, text=True, timeout=120, env=env, cwd=unprivileged["home"])
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.splitlines()


def test_the_container_seccomp_profile_allows_full_isolation(unprivileged):
    lines = under_profile(unprivileged, json.loads(PROFILE.read_text()))
    assert lines[0] == "RAN 1", lines


def test_a_runtime_default_like_profile_is_named_in_the_refusal(unprivileged):
    """Docker's and containerd's default profiles allow unshare and mount only with CAP_SYS_ADMIN."""
    profile = json.loads(PROFILE.read_text())
    profile["syscalls"].append({"names": ["unshare", "mount"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1})
    lines = under_profile(unprivileged, profile)
    assert lines[0].startswith("REFUSED") and "a seccomp filter on this process denies it" in lines[0], lines


# ------------------------------------------------------------------ the hostile suite as an ordinary user


@pytest.fixture(scope="session")
def unprivileged(tmp_path_factory):
    """uid `nobody` able to run this test suite: its own home and caches, and traverse rights on every
    directory leading to the interpreter, the venv and the repository (a CI clone under /root or a 0700
    mktemp directory), given for the session and taken back after. As an ordinary user: that user."""
    if not IS_ROOT:
        home = Path(tempfile.mkdtemp(prefix="lorafleet-sandbox-home-"))
        env = {**os.environ, "HOME": str(home),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        yield {"uid": os.geteuid(), "env": env, "home": str(home)}
        shutil.rmtree(home, ignore_errors=True)
        return
    user = pwd.getpwnam("nobody")
    needed = {ROOT, Path(sys.executable).resolve(), Path(sys.prefix), Path(sys.base_prefix),
              *(Path(p) for p in sys.path if p and Path(p).exists())}
    changed: dict[Path, int] = {}
    for path in needed:
        path = path.resolve()
        # Traverse rights on the parents; on the directory itself read rights too, since Python lists
        # an import path's directory to find modules in it (a clone straight into a 0700 mktemp dir).
        for d, bits in [*((p, 0o001) for p in reversed(path.parents)), (path, 0o005)]:
            mode = d.stat().st_mode if d.is_dir() else None
            if mode is not None and mode & bits != bits:
                changed.setdefault(d, mode)
                d.chmod(mode | bits)
    parent = "/home" if os.path.isdir("/home") else None
    home = Path(tempfile.mkdtemp(prefix="lorafleet-sandbox-home-", dir=parent))
    scratch = Path(tempfile.mkdtemp(prefix="lorafleet-sandbox-unpriv-"))
    for d in (home, scratch):
        os.chown(d, user.pw_uid, user.pw_gid)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
        "LORAFLEET_CACHE_DIR": str(scratch / "cache"), "TMPDIR": str(scratch), "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),  # this checkout
        **{k: v for k, v in os.environ.items() if k in ("CC", "LORAFLEET_SANDBOX_ENGINE")},
    }
    try:
        yield {"uid": user.pw_uid, "gid": user.pw_gid, "env": env, "home": str(home), "scratch": str(scratch)}
    finally:
        for d, mode in changed.items():
            d.chmod(mode)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


def test_the_sandbox_suites_pass_as_an_unprivileged_user(unprivileged):
    if not IS_ROOT:
        pytest.skip("this run is already the unprivileged one")
    cmd = ["setpriv", f"--reuid={unprivileged['uid']}", f"--regid={unprivileged['gid']}", "--clear-groups", "--",
           sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp",
           str(Path(unprivileged["scratch"]) / "pytest"), str(HERE / "test_hostile.py"), str(HERE / "test_rootless.py")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=unprivileged["env"], cwd=ROOT)
    tail = out.stdout[-4000:] + out.stderr[-2000:]
    assert out.returncode == 0, tail
    summary = out.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, tail
    assert "1 skipped" in summary, tail  # only this test, which the unprivileged run doesn't repeat
