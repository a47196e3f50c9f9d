"""Namespaces and the minimal root of a sandbox server: the setup both engines share.

Run in the fork server before it serves (or execs the C engine): as an ordinary user, first enter a new
user namespace (the caller's uid mapped to root inside: the same layers without privileges on the host,
see enter_user_namespace); then unshare pid, net, mount, ipc and uts namespaces, fork so that the
server is pid 1 of the new pid namespace, pivot into a minimal read-only root (the system, the Python
installation and its venv; no project tree, datasets or home directories)
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
CLONE_NEWUSER = 0x10000000
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


# Why the namespaces could not be made (for the refusal message); None while nothing failed.
blocker: str | None = None


def enter_namespaces(sock: socket.socket, layers: list[str]) -> None:
    """unshare, then fork: the child is pid 1 of the new pid namespace and becomes the server."""
    global blocker
    if os.geteuid() != 0:
        err = enter_user_namespace()
        if err:
            blocker = userns_blocker(err)
            return
        layers.append("user_namespace")
    flags = CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS
    if _libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        blocker = (userns_blocker(err, after_userns=True) if "user_namespace" in layers else
                   f"unshare(pid, net, mount, ipc, uts) failed: {os.strerror(err)} (needs CAP_SYS_ADMIN: a container "
                   "without it, or a seccomp profile that denies unshare)")
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
    except OSError as e:
        blocker = f"making the mounts private failed: {e} ({_mac_hint()})"
        return
    # Opened before any tmpfs goes over /tmp: the interpreter or venv may live there (a CI clone in /tmp).
    python_fds = _open_python_dirs()
    try:
        _pivot_to_minimal_root(python_fds)
        layers.append("private_root")
    except OSError as e:
        blocker = f"building the minimal root failed: {e} ({_mac_hint()})"  # keep the host's tree, still with
        # private /proc and /tmp below
    try:
        if "private_root" in layers:  # its /proc, private /tmp & co. were made before the pivot
            layers.append("private_tmp")
        else:
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            _mount_private_tmp("")
            layers.append("private_tmp")
            _bind_python_dirs(python_fds, only_under=SHARED_TMP)
            _expose_interpreter()
    except OSError as e:
        blocker = blocker or f"mounting a private /proc or /tmp failed: {e} ({_proc_hint()})"
    finally:
        for fd in python_fds.values():
            os.close(fd)


# statvfs flag -> mount flag. In a user namespace the kernel locks a bind mount's nosuid, nodev, noexec
# and atime flags as the host set them: a remount must repeat them or it fails with EPERM.
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
_KEPT_FLAGS = ((os.ST_NOEXEC, MS_NOEXEC), (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME),
               (os.ST_RELATIME, MS_RELATIME))


def _remount_read_only(target: str) -> None:
    have = os.statvfs(target).f_flag
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV
    for st, ms in _KEPT_FLAGS:
        if have & st:
            flags |= ms
    _mount("none", target, None, flags)


# ---------------------------------------------------------------- user namespace (not root)


def enter_user_namespace() -> int:
    """Become root of a new user namespace holding only the caller's uid and gid; 0, or the errno.

    No second uid exists in it, so there is no uid drop: what keeps a run from the caller's files and
    processes is the private root and the pid namespace, and every run drops all capabilities.
    """
    uid, gid = os.geteuid(), os.getegid()
    if _libc.unshare(CLONE_NEWUSER) != 0:
        return ctypes.get_errno()
    try:
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:  # setgroups first: an unprivileged gid_map needs it
                f.write(text)
    except OSError as e:
        return e.errno or errno.EPERM
    return 0


SYSCTLS = {
    "kernel.unprivileged_userns_clone": "/proc/sys/kernel/unprivileged_userns_clone",
    "user.max_user_namespaces": "/proc/sys/user/max_user_namespaces",
    "kernel.apparmor_restrict_unprivileged_userns": "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
}


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _seccomp_mode() -> str | None:
    for line in (_read("/proc/self/status") or "").splitlines():
        if line.startswith("Seccomp:"):
            return line.split()[1]
    return None


def userns_blocker(err: int, after_userns: bool = False) -> str:
    """Which setting keeps an ordinary user from making namespaces here, and how to allow it."""
    return explain_userns_failure(err, {k: _read(p) for k, p in SYSCTLS.items()}, _seccomp_mode(), after_userns)


def explain_userns_failure(err: int, sysctls: dict[str, str | None], seccomp: str | None,
                           after_userns: bool = False) -> str:
    """Pure: the errno of the failed step, the sysctls as read (None: absent), /proc/self/status Seccomp."""
    what = ("unshare(pid, net, mount, ipc, uts) inside the new user namespace" if after_userns
            else "unshare(CLONE_NEWUSER)")
    head = f"{what} failed: {os.strerror(err)}"
    if sysctls.get("kernel.unprivileged_userns_clone") == "0":
        return (f"{head}: the sysctl kernel.unprivileged_userns_clone is 0, which forbids user namespaces to "
                "ordinary users (`sysctl -w kernel.unprivileged_userns_clone=1` allows them)")
    if sysctls.get("user.max_user_namespaces") == "0":
        return (f"{head}: the sysctl user.max_user_namespaces is 0 (`sysctl -w user.max_user_namespaces=15000` "
                "allows them; in a container it is set by the runtime or the pod's user namespace)")
    if err == errno.ENOSPC:
        return (f"{head}: the limit user.max_user_namespaces ({sysctls.get('user.max_user_namespaces')}) or the "
                "nesting depth (32) is reached")
    if sysctls.get("kernel.apparmor_restrict_unprivileged_userns") == "1":
        return (f"{head}: the sysctl kernel.apparmor_restrict_unprivileged_userns is 1 (Ubuntu 23.10+): give the "
                "interpreter an AppArmor profile with `userns,` or `sysctl -w "
                "kernel.apparmor_restrict_unprivileged_userns=0`")
    if seccomp == "2" and err == errno.EPERM:
        return (f"{head}: a seccomp filter on this process denies it — a container runtime's default profile "
                "(Docker, containerd/CRI-O RuntimeDefault) allows unshare only with CAP_SYS_ADMIN; run the container "
                "with the profile in deploy/docker/sandbox-seccomp.json or seccomp=unconfined (see docs/sandbox.md)")
    if err == errno.EINVAL and not after_userns:
        return f"{head}: this kernel has no user namespaces (CONFIG_USER_NS), or the process is multi-threaded"
    return (f"{head}: user namespaces are denied here (a chroot, an LSM policy, or a container runtime without "
            "user namespaces for its workloads; see docs/sandbox.md)")


def _mac_hint() -> str:
    if _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
        return "kernel.apparmor_restrict_unprivileged_userns is 1: the new user namespace has no capabilities"
    if os.path.exists("/sys/kernel/security/apparmor") and (_read("/proc/self/attr/current") or "unconfined") != "unconfined":
        return f"the AppArmor profile {_read('/proc/self/attr/current')!r} denies mounts; run it unconfined"
    return "an LSM or container policy denies mounts"


def _proc_hint() -> str:
    return ("a container runtime masks parts of /proc, and the kernel then refuses a new /proc in a nested pid "
            "namespace: Kubernetes `procMount: Unmasked` (with `hostUsers: false`) or Docker "
            "`--security-opt systempaths=unconfined`")


# ---------------------------------------------------------------- a run in a user namespace

SECBIT_NOROOT, SECBIT_NOROOT_LOCKED, SECBIT_NO_SETUID_FIXUP, SECBIT_NO_SETUID_FIXUP_LOCKED = 1, 2, 4, 8
SECBIT_KEEP_CAPS_LOCKED = 32
PR_SET_SECUREBITS, PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 28, 24, 47, 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522
SYS_CAPSET = {"x86_64": 126, "aarch64": 91}


def drop_capabilities() -> None:
    """Give up every capability for good (a run as root of its user namespace: the zygote.c twin is drop_caps).

    Securebits first (so that an exec as uid 0 gives none back), then the bounding and ambient sets, then
    the effective/permitted/inheritable sets themselves.
    """
    prctl(PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP
          | SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED)
    cap = 0
    while _libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) == 0:
        cap += 1
    _libc.prctl(PR_CAP_AMBIENT, ctypes.c_ulong(PR_CAP_AMBIENT_CLEAR_ALL), 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # two (effective, permitted, inheritable) triples, all zero
    if _libc.syscall(SYS_CAPSET[os.uname().machine], header, data) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"capset: {os.strerror(e)}")


# ---------------------------------------------------------------- memory: threads under RLIMIT_AS

# RLIMIT_AS counts address space, not memory: glibc reserves a 64 MiB heap per malloc arena (one per
# thread, up to 8 per core) and a thread stack as big as RLIMIT_STACK (8 MiB), so at 256 MiB a sixth
# thread could not start. One arena (Python's allocator holds the GIL anyway; big blocks are mmap'ed
# either way) and 2 MiB stacks let 16 threads fit with room to spare; a program that needs a deeper C
# stack in a thread asks for it with threading.stack_size() as usual.
MALLOC_ARENAS = 1
THREAD_STACK_BYTES = 2 * 1024 * 1024
M_ARENA_MAX = -8


def fit_threads() -> None:
    """Set the malloc arena count and the default thread stack in the server (inherited by every child)."""
    import _thread

    _libc.mallopt(M_ARENA_MAX, MALLOC_ARENAS)
    _thread.stack_size(THREAD_STACK_BYTES)


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
        _remount_read_only(target)


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
            _remount_read_only(target)
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
        # The new pid namespace's /proc, mounted while the host's /proc is still visible in this mount
        # namespace: in a user namespace the kernel allows a new proc only next to a fully visible one.
        _mount("proc", f"{new}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        # Read-only sysctls: rootless, the run's uid owns the server's ipc and net namespaces, whose
        # sysctls (kernel.shm*, ...) it could otherwise set for the runs after it.
        _mount(f"{new}/proc/sys", f"{new}/proc/sys", None, MS_BIND | MS_REC)
        _remount_read_only(f"{new}/proc/sys")
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


def seal_root() -> None:
    """Remount the minimal root's own tmpfs read-only once it is built (its binds are read-only already).

    Rootless, everything the server made in it is owned by the run's uid too (there is only one uid): a
    run could otherwise add files at / or change /dev's entries for the runs after it.
    """
    _mount("none", "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


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
