"""The sandbox fork server: a warm interpreter that sits inside its namespaces and forks one child per run.

Started by `pool.py` as `python -I _server.py FD [options]` (see main). Namespaces and the minimal root
are set up by `_isolation.py`; with the C engine this process then execs `_zygote.py` (see zygote.c),
otherwise it serves requests itself (the Python engine, below). Standard library only
and no lorafleet imports: every child is a copy of this process's memory, so it must hold nothing secret
(it is started with an almost empty environment and only ever receives code, stdin and limits).

Layout when the kernel allows (root):
  outer process P --unshare(pid, net, mount, ipc, uts)--> fork --> S = pid 1 of the new pid namespace
  S pivots into a minimal read-only root (/usr, /etc, /lib*, the Python installation and venv; no project
  tree, no datasets, no home directories), mounts a private /proc and tmpfs on /tmp, /var/tmp, /dev/shm,
  then serves requests one at a time:
  fork child C -> setsid, rlimits, no_new_privs, uid/gid drop to a uid unique to this server, clean env,
  private working directory -> exec the code in-process (the interpreter is already warm).
After C exits, S (pid 1) sends SIGKILL to every other process of its namespace (kill(-1) from pid 1 reaches
exactly the run's leftovers) and reaps them, so nothing of a run survives it.

Without namespaces the same server runs on the host: it becomes a child subreaper and kills leftovers
with a helper that takes the run's uid (kill(-1) as that uid), or by walking its descendants when it can't
change uid. The hello message lists the layers that are really active.
"""

from __future__ import annotations

import fcntl
import os
import resource
import select
import shutil
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I leaves the script's directory out
import _engine_c  # noqa: E402
import _isolation  # noqa: E402
import _runner  # noqa: E402
import _wire  # noqa: E402
from _wire import recv_exact, send_msg  # noqa: E402

del sys.path[0]

# Every server runs its programs as its own uid: RLIMIT_NPROC counts per uid, so a fork bomb in one run
# can't starve a run of another server, and "kill every process of this uid" reaches exactly one run.
UID_BASE = 1_000_000
SETUP_FD = 3
PIPE_CHUNK = 65536
MIN_PATH = _runner.MIN_PATH

# Two server images. Every fork copies the page tables of the whole interpreter and every child pays
# copy-on-write faults on what it touches, so a bigger image costs every run (a fork of the full image
# costs about twice a lean one). The harness sends a program to the lean image when everything it
# imports is already there (e.g. plain stdin/stdout programs), else to the full one.
# Full: imported once so that a child finds them warm (typical of contest and HumanEval code).
# Not threading (or queue, which imports it) nor random (or statistics): their at-fork hooks run in
# every child; threading's alone doubles the cost of a fork. A program that needs them imports them.
PRELOAD = (
    "array", "bisect", "collections", "copy", "dataclasses", "datetime", "decimal", "enum", "fractions",
    "functools", "hashlib", "heapq", "io", "itertools", "json", "math", "operator", "re",
    "string", "traceback", "types", "typing", "atexit", "builtins", "cmath",
    "textwrap", "unicodedata", "numbers", "contextlib", "abc", "struct", "time", "pprint",
)
IMAGES = {"lean": ("types", "atexit"), "full": PRELOAD}  # lean: what _runner needs to run any program

class Server:
    def __init__(self, sock: socket.socket, namespaces: bool, drop: bool) -> None:
        self.sock = sock
        self.layers: list[str] = ["process_group", "clean_env", "private_workdir", "rlimits", "wall_clock", "output_cap"]
        if namespaces:
            _isolation.enter_namespaces(sock, self.layers)
        self.pidns = "pid_namespace" in self.layers
        self.private_tmp = "private_tmp" in self.layers
        outer = int(os.environ.pop("LORAFLEET_SANDBOX_OUTER_PID", os.getpid()))
        # Root of its own user namespace (not root): one uid only, so no uid drop; runs drop all capabilities.
        self.userns = "user_namespace" in self.layers
        self.root = os.geteuid() == 0 and not self.userns
        self.drop = drop and self.root
        self.uid = UID_BASE + outer if self.drop else os.getuid()
        self.gid = UID_BASE + outer if self.drop else os.getgid()
        if self.drop:
            self.layers.append("uid_drop")
        self.layers += ["no_new_privs", "memory_address_space"]
        # Processes of this user namespace besides the run (the outer process and this server), which
        # RLIMIT_NPROC counts too there: per (user namespace, uid) since Linux 5.14.
        self.nproc_extra = 2 if self.userns else 0
        if self.userns:  # a run shares our uid and may signal pid 1 with what it handles: Python's SIGINT
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if not self.pidns:
            _isolation.prctl(_isolation.PR_SET_CHILD_SUBREAPER, 1)
        base = "/tmp" if self.private_tmp else os.environ.get("TMPDIR", "/tmp")
        self.workroot = os.path.join(base, f"lorafleet-sandbox-{os.urandom(6).hex()}")
        os.mkdir(self.workroot, 0o711)
        os.chmod(self.workroot, 0o711)
        self.next_child: tuple[int, int, int, int, int, int] | None = None
        self.python_in_tmp = {d for d in _isolation._python_dirs()
                              if any(d.startswith(t + "/") for t in _isolation.SHARED_TMP)} if self.private_tmp else set()
        self.outer = outer
        if not self.drop and not self.private_tmp:
            self._clean_shared_tmp = lambda: None  # type: ignore[method-assign]  # same uid as the host: touch nothing

    # -------------------------------------------------------------- one run

    def prepare_children(self) -> None:
        self.workdir = os.path.join(self.workroot, "run")
        _runner.prepare_children(self.workdir)

    def execute(self, limits: dict, code: bytes, stdin: bytes, payload: bytes) -> tuple[dict, tuple[bytes, bytes]]:
        child, self.next_child = self.next_child or self._spawn(), None
        workdir = self.workdir
        try:
            try:
                try:
                    os.mkdir(workdir, 0o700)
                except FileExistsError:  # a previous removal failed half-way: never reuse what a run left
                    shutil.rmtree(workdir)
                    os.mkdir(workdir, 0o700)
                fd = os.open(os.path.join(workdir, "solution.py"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                try:
                    view = memoryview(code)
                    while view:
                        view = view[os.write(fd, view):]
                finally:
                    os.close(fd)
                if self.drop:
                    os.chown(workdir, self.uid, self.gid)
            except BaseException:
                _discard(child)
                raise
            return self._watch(child, limits, code, stdin, payload)
        finally:
            self._remove_workdir(workdir)
            self._clean_shared_tmp()

    def _remove_workdir(self, workdir: str) -> None:
        try:  # the usual case, in two system calls: only the program file is there
            os.unlink(os.path.join(workdir, "solution.py"))
            os.rmdir(workdir)
        except OSError:
            shutil.rmtree(workdir, ignore_errors=True)

    def _clean_shared_tmp(self) -> None:
        """Nothing a run wrote to /tmp, /var/tmp or /dev/shm may reach the next run (or stay behind).

        Rootless, the run's uid owns these directories and the work root too (there is only one uid): it
        may have changed their modes or left files in the work root, so both are put back as well.
        """
        dirs = _isolation.SHARED_TMP + ((self.workroot,) if self.userns else ())
        for d in dirs:
            if self.userns:
                try:
                    os.chmod(d, 0o711 if d == self.workroot else 0o1777)
                except OSError:
                    pass
            try:
                entries = list(os.scandir(d))
            except OSError:
                continue
            for entry in entries:
                if entry.path == self.workroot:
                    continue
                try:
                    if (self.drop or not self.private_tmp) and entry.stat(follow_symlinks=False).st_uid != self.uid:
                        # A run writes only as its own uid; anything else is the server's (e.g. the
                        # read-only bind of a venv that lives under /tmp) or, on the host, not ours.
                        continue
                    self._remove(entry)
                except OSError:
                    pass

    def _remove(self, entry: os.DirEntry) -> None:
        """Remove what a run left, except the way down to the interpreter's read-only binds (a venv under
        /tmp): rmtree would try every file of the venv, in vain, after every run."""
        if not entry.is_dir(follow_symlinks=False):
            os.unlink(entry.path)
        elif entry.path in self.python_in_tmp:
            return
        elif any(d.startswith(entry.path + "/") for d in self.python_in_tmp):
            for inner in list(os.scandir(entry.path)):
                try:
                    self._remove(inner)
                except OSError:
                    pass
        else:
            shutil.rmtree(entry.path, ignore_errors=True)

    def prefork(self) -> None:
        """Fork the next run's child now, while the harness reads the last result.

        The child is a fresh copy of the server, still root, holding nothing of any run: it does its
        request-independent setup and then sleeps on its request pipe. Only with a pid namespace, where
        the server is pid 1 and nothing else on the host sees it as a child; the run still starts from
        a process that never ran anything, so this changes when the fork happens, not what is isolated.
        """
        if self.pidns and self.next_child is None:
            self.next_child = self._spawn()

    def _spawn(self) -> tuple[int, int, int, int, int, int]:
        """Fork a child that sets itself up and waits for its request; returns the server's ends."""
        r0, w0 = os.pipe()
        r1, w1 = os.pipe()
        r2, w2 = os.pipe()
        rs, ws = os.pipe()
        rq, wq = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                _child(self, (r0, w1, w2, ws, rq))
            finally:
                os._exit(125)
        for fd in (r0, w1, w2, ws, rq):
            os.close(fd)
        return pid, w0, r1, r2, rs, wq

    def _watch(self, child: tuple[int, int, int, int, int, int], lim: dict, code: bytes, stdin: bytes, payload: bytes):
        pid, w0, r1, r2, rs, wq = child
        try:  # blocking: the child is already reading, a large program just takes several pipe-fulls
            os.write(wq, _wire.pack_request(lim, code, b"", payload))
        except OSError:
            pass  # the child is gone: its exit status and empty setup report say so below
        os.close(wq)
        pending = memoryview(stdin)
        if pending:  # most inputs fit the pipe: one write, no write loop needed
            os.set_blocking(w0, False)
            try:
                pending = pending[os.write(w0, pending[:PIPE_CHUNK]):]
            except (BlockingIOError, BrokenPipeError):
                pass
        if not pending:
            os.close(w0)
            w0 = -1
        t0 = time.monotonic()
        pidfd = os.pidfd_open(pid)
        poller = select.poll()
        caps = {r1: lim["stdout_cap"], r2: lim["stderr_cap"]}
        bufs = {r1: bytearray(), r2: bytearray()}
        truncated = {r1: False, r2: False}
        watched = {r1, r2, pidfd}
        for fd in watched:
            poller.register(fd, select.POLLIN)
        if w0 >= 0:
            poller.register(w0, select.POLLOUT)
            watched.add(w0)

        def drop(fd: int) -> None:
            poller.unregister(fd)
            watched.discard(fd)
            os.close(fd)

        ceiling = t0 + lim["wall_s"]
        idle_s = lim["idle_s"]
        deadline = min(ceiling, t0 + idle_s) if idle_s else ceiling
        killed_for = None
        exited = None
        end = deadline
        while watched:
            now = time.monotonic()
            if exited is None and killed_for is None and now >= deadline:
                # Idle time is the wall time less the time the run waited for a CPU: a sleeper stops at
                # idle_s, a program slowed by the machine's load gets its CPU time (its own limit).
                idle = now - t0 - _runner.run_delay_s(pid) if idle_s and now < ceiling else None
                if idle is not None and idle < idle_s:
                    deadline = end = min(ceiling, now + idle_s - idle)
                else:
                    killed_for = "wall" if idle is None else "idle"
                    self._kill_all(pid)
            if exited is not None and now >= end:
                break
            wait = 0.05 if killed_for is not None and exited is None else max(0.0, end - now)
            for fd, ev in poller.poll(wait * 1000):
                if fd == pidfd:
                    drop(pidfd)
                    _, status, ru = os.wait4(pid, 0)
                    exited = (status, ru, time.monotonic())
                    # The run ends with its main process: nothing it started may outlive it.
                    self._kill_all(pid)
                    if w0 >= 0:
                        drop(w0)
                        w0 = -1
                    end = time.monotonic() + 2.0  # drain what is left in the pipes
                elif fd == w0:
                    try:
                        pending = pending[os.write(w0, pending[:PIPE_CHUNK]):]
                    except BlockingIOError:
                        continue
                    except OSError:  # the program closed its stdin: fine
                        pending = pending[:0]
                    if not pending:
                        drop(w0)
                        w0 = -1
                elif fd in caps:
                    chunk = os.read(fd, PIPE_CHUNK)
                    if not chunk:
                        drop(fd)
                        continue
                    room = caps[fd] - len(bufs[fd])
                    bufs[fd] += chunk[:room]
                    if len(chunk) > room:
                        truncated[fd] = True
                        drop(fd)
                        if killed_for is None and exited is None:
                            killed_for = "output"
                            self._kill_all(pid)
        for fd in list(watched):
            drop(fd)
        if exited is None:  # only if draining gave up
            _, status, ru = os.wait4(pid, 0)
            exited = (status, ru, time.monotonic())
        self._reap()
        status, ru, t1 = exited
        setup = os.read(rs, 4096)
        os.close(rs)
        head = {
            "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "killed_for": killed_for,
            "wall_ms": (t1 - t0) * 1000.0,
            "cpu_ms": (ru.ru_utime + ru.ru_stime) * 1000.0,
            "maxrss_kb": ru.ru_maxrss,
            "setup_error": None if setup == b"ok" else (setup.decode(errors="replace") or "child died during setup"),
            "stdout_truncated": truncated[r1],
            "stderr_truncated": truncated[r2],
        }
        return head, (bytes(bufs[r1]), bytes(bufs[r2]))

    # -------------------------------------------------------------- leftovers

    def _kill_all(self, pid: int | None) -> None:
        if self.pidns:
            for _ in range(1000):  # pid 1 never receives its own kill(-1); each call reaches the whole run
                try:
                    os.kill(-1, signal.SIGKILL)
                except ProcessLookupError:
                    return
        elif self.drop:
            killer = os.fork()
            if killer == 0:
                try:
                    os.setresgid(self.gid, self.gid, self.gid)
                    os.setresuid(self.uid, self.uid, self.uid)
                    for _ in range(1000):
                        os.kill(-1, signal.SIGKILL)
                except BaseException:
                    pass
                os._exit(0)
            os.waitpid(killer, 0)
        else:
            if pid is not None:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
            for _ in range(100):
                kids = _descendants(os.getpid())
                if not kids:
                    return
                for k in kids:
                    try:
                        os.kill(k, signal.SIGKILL)
                    except OSError:
                        pass

    def _reap(self) -> None:
        """Reap every child (orphans of the run come to us as pid 1 or subreaper) until none is left."""
        end = time.monotonic() + 5.0
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                if time.monotonic() > end:
                    return
                self._kill_all(None)
                time.sleep(0.001)

    def serve(self) -> None:
        send_msg(self.sock, {"layers": self.layers, "uid": self.uid, "workroot": self.workroot,
                             "outer_pid": self.outer, "pidns": self.pidns, "engine": "python",
                             "modules": sorted(sys.modules), "blocker": _isolation.blocker})
        while True:
            raw = recv_exact(self.sock, _wire.REQUEST.size)
            if raw is None:
                return
            limits, *sizes = _wire.unpack_request(raw)
            blobs = [recv_exact(self.sock, n) if n else b"" for n in sizes]
            if None in blobs:
                return
            try:
                head, outs = self.execute(limits, *blobs)
            except Exception as e:  # noqa: BLE001 - reported to the harness as sandbox_error
                head, outs = {"error": f"{type(e).__name__}: {e}"}, (b"", b"")
            self.sock.sendall(_wire.pack_response(head, *outs))
            # Nothing of this run may be reachable from the next child (it is a copy of this process).
            del raw, limits, blobs, head, outs
            self.prefork()


def _discard(child: tuple[int, ...]) -> None:
    """End a spawned child that will get no request (it is still root and has run nothing)."""
    pid, *fds = child
    for fd in fds:
        os.close(fd)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _descendants(root: int) -> list[int]:
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(x) for x in f.read().split()]
                out += kids
                todo += kids
        except OSError:
            continue
    return out


# ---------------------------------------------------------------- the child: runs the program


REQUEST_FD = SETUP_FD + 1


def _child(server: Server, fds: tuple[int, int, int, int, int]) -> None:
    """Set up what doesn't depend on the request, wait for it, then limit, drop and run the program."""
    try:
        # Sources first moved above the targets 0-4, so that no dup2 overwrites a source still to move.
        moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, REQUEST_FD + 1) for fd in fds]
        for target, fd in enumerate(moved):
            os.dup2(fd, target, inheritable=target <= 2)
        os.closerange(REQUEST_FD + 1, 1 << 20)
        os.setsid()
        os.umask(0o077)
        _isolation.prctl(_isolation.PR_SET_NO_NEW_PRIVS, 1)
    except BaseException as e:  # noqa: BLE001
        _setup_failed(e)
    chunks = []
    while chunk := os.read(REQUEST_FD, 1 << 20):
        chunks.append(chunk)
    os.close(REQUEST_FD)
    if not chunks:  # the server is going away without a run for us
        os._exit(0)
    data = b"".join(chunks)
    lim, n_code, _, _ = _wire.unpack_request(data[:_wire.REQUEST.size])
    code, payload = data[_wire.REQUEST.size:_wire.REQUEST.size + n_code], data[_wire.REQUEST.size + n_code:]
    del chunks, data
    try:
        os.chdir(server.workdir)
        cpu = max(1, int(-(-lim["cpu_s"] // 1)))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (lim["memory_bytes"], lim["memory_bytes"]))
        resource.setrlimit(resource.RLIMIT_FSIZE, (lim["fsize_bytes"], lim["fsize_bytes"]))
        resource.setrlimit(resource.RLIMIT_NOFILE, (lim["nofile"], lim["nofile"]))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        nproc = lim["nproc"] + server.nproc_extra
        if not server.drop and not server.userns:  # shared uid: allow what it already runs plus the run's share
            nproc += _count_own_processes()
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        if server.drop:
            os.setgroups([])
            os.setresgid(server.gid, server.gid, server.gid)
            os.setresuid(server.uid, server.uid, server.uid)
        elif server.userns:
            _isolation.drop_capabilities()
            signal.signal(signal.SIGINT, signal.default_int_handler)  # the program's, as in a fresh interpreter
        os.write(SETUP_FD, b"ok")  # environment, argv, sys.path and stdio: see _runner.prepare_children
        os.close(SETUP_FD)
    except BaseException as e:  # noqa: BLE001
        _setup_failed(e)
    os._exit(_runner.run_program(payload, code.decode("utf-8", errors="replace")))


def _setup_failed(e: BaseException) -> None:
    try:
        os.write(SETUP_FD, f"{type(e).__name__}: {e}".encode()[:4000] or b"setup failed")
    finally:
        os._exit(125)


def _count_own_processes() -> int:
    uid, n = os.getuid(), 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}").st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def main(argv: list[str]) -> None:
    """`_server.py FD [--zygote SO] [--image lean|full] [--cpu N] [--no-namespaces] [--no-drop]`"""
    fd = int(argv[0])
    sock = socket.socket(fileno=fd)
    os.set_inheritable(fd, False)
    cpu = _option(argv, "--cpu")
    if cpu is not None:  # the server and every child it forks stay on one CPU (see pool.Sandbox)
        os.sched_setaffinity(0, {int(cpu)})
    preload = IMAGES[_option(argv, "--image") or "full"]
    zygote = _engine_c.read_zygote(_option(argv, "--zygote"))
    server = Server(sock, namespaces="--no-namespaces" not in argv, drop="--no-drop" not in argv)
    full = server.pidns and (server.drop or server.userns) and {"private_root", "private_tmp"} <= set(server.layers)
    if zygote and full:
        try:
            _engine_c.exec_zygote(server, zygote, preload)  # does not return
        except OSError:
            pass  # stay on the Python engine; the hello says which engine answers
    _engine_c.seccomp_from(_option(argv, "--zygote"), server.layers)  # the reduced modes still get the filter
    _isolation.fit_threads()
    for name in preload:
        try:
            __import__(name)
        except ImportError:
            pass
    if "private_root" in server.layers:
        _isolation.seal_root()
    server.prepare_children()
    import gc

    gc.collect()
    gc.freeze()  # keeps the children's copy-on-write pages shared
    try:
        server.prefork()
        server.serve()
    finally:
        shutil.rmtree(server.workroot, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
