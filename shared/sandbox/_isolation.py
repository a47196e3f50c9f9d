"""Namespaces and the minimal root of a sandbox server: the setup both engines share.

Run in the fork server before it serves (or execs the C engine): unshare pid, net, mount, ipc and uts
namespaces, fork so that the server is pid 1 of the new pid namespace, pivot into a minimal read-only
root (the system, the Python installation and its venv; no project tree, datasets or home directories)
with a private /proc, /tmp, /var/tmp and /dev/shm. Each step that works appends its layer name to
`layers`; a step the kernel refuses leaves its layer out (and the run says so). Standard library only.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 32, 4096, 0x4000, 1 << 18
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38
SHARED_TMP = ("/tmp", "/var/tmp", "/dev/shm")

_libc = ctypes.CDLL(None, use_errno=True)


def prctl(option: int, arg: int) -> None:
    if _libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    if _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount {target}: {os.strerror(e)}")


def enter_namespaces(sock: socket.socket, layers: list[str]) -> None:
    """unshare, then fork: the child is pid 1 of the new pid namespace and becomes the server."""
    flags = CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS
    if _libc.unshare(flags) != 0:
        return
    outer = os.getpid()
    pid = os.fork()
    if pid:
        # P: waits for S and leaves with it; S dies with P (PDEATHSIG), so killing P ends the namespace.
        sock.close()
        signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGKILL))
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
            except InterruptedError:
                continue
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != 0:  # P died between fork and prctl
        os._exit(1)
    os.environ["LORAFLEET_SANDBOX_OUTER_PID"] = str(outer)
    layers += ["pid_namespace", "net_namespace", "ipc_namespace", "uts_namespace"]
    try:
        _mount("none", "/", None, MS_REC | MS_PRIVATE)
        layers.append("mount_namespace")
    except OSError:
        return
    # Opened before any tmpfs goes over /tmp: the interpreter or venv may live there (a CI clone in /tmp).
    python_fds = _open_python_dirs()
    try:
        _pivot_to_minimal_root(python_fds)
        layers.append("private_root")
    except OSError:
        pass  # keep the host's tree, still with private /proc and /tmp below
    try:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        if "private_root" in layers:  # its private /tmp & co. were made before the pivot
            layers.append("private_tmp")
        else:
            _mount_private_tmp("")
            layers.append("private_tmp")
            _bind_python_dirs(python_fds, only_under=SHARED_TMP)
            _expose_interpreter()
    except OSError:
        pass
    finally:
        for fd in python_fds.values():
            os.close(fd)


TMP_SIZES = {"/tmp": "256m", "/var/tmp": "16m", "/dev/shm": "64m"}


def _mount_private_tmp(prefix: str) -> None:
    """A fresh tmpfs on /tmp, /var/tmp and /dev/shm (under `prefix`, the root being built, if given)."""
    for target, size in TMP_SIZES.items():
        if prefix:
            os.makedirs(prefix + target, 0o755, exist_ok=True)
        if os.path.isdir(prefix + target):
            _mount("tmpfs", prefix + target, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=1777")


SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
MNT_DETACH = 2
# What a Python program may need from the host, read-only: the system (programs, shared libraries,
# /etc for locale, timezone and users) plus the interpreter's own installation and venv.
ROOT_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
DEV_NODES = ("null", "zero", "full", "random", "urandom")


def _python_dirs() -> set[str]:
    dirs = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, sys.exec_prefix)}
    dirs.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    return dirs


def _open_python_dirs() -> dict[str, int]:
    return {d: os.open(d, os.O_PATH | os.O_DIRECTORY) for d in sorted(_python_dirs()) if os.path.isdir(d)}


def _bind_python_dirs(fds: dict[str, int], prefix: str = "", only_under: tuple[str, ...] | None = None) -> None:
    """Bind the interpreter's directories (read-only) at `prefix + path`, from fds opened earlier.

    `only_under`: rebind just those that a private tmpfs (on /tmp, ...) has since covered.
    """
    for d, fd in fds.items():
        if only_under is not None and not any(d == t or d.startswith(t + "/") for t in only_under):
            continue
        target = prefix + d
        if only_under is None and os.path.lexists(target):
            continue  # already inside a bound directory
        os.makedirs(target, 0o755, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
        _mount("none", target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _pivot_to_minimal_root(python_fds: dict[str, int]) -> None:
    """Make the namespace's / a tmpfs holding only ROOT_DIRS and the Python installation.

    Data on the host (datasets with expected outputs, artifacts, home directories, the project tree)
    is simply not there. The tree is built on a tmpfs at /tmp, then pivot_root(".", ".") swaps it in.
    """
    import platform

    nr = SYS_PIVOT_ROOT.get(platform.machine())
    if nr is None:
        raise OSError(errno.ENOSYS, "pivot_root: unknown architecture")
    new = "/tmp"
    _mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=0755")
    try:
        for d in ROOT_DIRS:
            target = new + d
            if not os.path.lexists(d):
                continue
            if os.path.islink(d):
                os.symlink(os.readlink(d), target)
                continue
            os.makedirs(target, 0o755, exist_ok=True)
            _mount(d, target, None, MS_BIND | MS_REC)
            _mount("none", target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
        # The private /tmp & co. go in before the interpreter's directories, so that a venv living under
        # /tmp or /var/tmp (a CI clone) is bound on top of them, not hidden under them. (Binding it back
        # after the pivot is not possible: its descriptor points into the detached old root.)
        _mount_private_tmp(new)
        _bind_python_dirs(python_fds, prefix=new)
        for node in DEV_NODES:
            open(f"{new}/dev/{node}", "w").close()
            _mount(f"/dev/{node}", f"{new}/dev/{node}", None, MS_BIND)
        for name, link in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                           ("stderr", "/proc/self/fd/2")):
            os.symlink(link, f"{new}/dev/{name}")
        os.makedirs(f"{new}/proc", 0o755, exist_ok=True)
        os.chdir(new)
        if _libc.syscall(nr, b".", b".") != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"pivot_root: {os.strerror(e)}")
    except BaseException:
        os.chdir("/")
        _libc.umount2(new.encode(), MNT_DETACH)
        raise
    if _libc.umount2(b".", MNT_DETACH) != 0:  # the old root, stacked under the new one
        e = ctypes.get_errno()
        raise OSError(e, f"umount old root: {os.strerror(e)}")
    os.chdir("/")


def _expose_interpreter() -> None:
    """Let the run's uid read the Python installation even where it lives under a private directory.

    With the interpreter under /root (0700, e.g. pyenv), an unprivileged program could import only
    what the server had preloaded. Inside our mount namespace a tmpfs (0755) goes over the closed
    ancestor and only the installation is bound back in: root's home stays hidden.
    """
    needed = _python_dirs()
    by_blocker: dict[str, list[str]] = {}
    for path in sorted(needed):
        parts = path.strip("/").split("/")
        for i in range(len(parts)):
            anc = "/" + "/".join(parts[:i])
            if anc != "/" and not os.stat(anc).st_mode & 0o001:
                by_blocker.setdefault(anc, []).append(path)
                break
    for blocker, paths in by_blocker.items():
        fds = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in paths}
        _mount("tmpfs", blocker, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
        for p, fd in fds.items():
            os.makedirs(p, 0o755, exist_ok=True)
            _mount(f"/proc/self/fd/{fd}", p, None, MS_BIND | MS_REC)
            os.close(fd)
