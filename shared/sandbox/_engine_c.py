"""Launching the C engine (zygote.c) from the server, and the seccomp filter its compiled module carries.

Runs in the server process (_server.py) before it serves anything. Standard library only.
"""

from __future__ import annotations

import json
import os
import sys

import _isolation

ZYGOTE_DIR = "/.lorafleet-zygote"
ZYGOTE_FILES = ("_zygote.py", "_runner.py")


def read_zygote(so_path: str | None) -> dict[str, bytes] | None:
    """The C engine's files, read while the host's tree is still visible (the minimal root hides it)."""
    if not so_path:
        return None
    here = os.path.dirname(os.path.abspath(__file__))
    files = {"_lorafleet_zygote.so": so_path, **{name: os.path.join(here, name) for name in ZYGOTE_FILES}}
    try:
        out = {}
        for name, path in files.items():
            with open(path, "rb") as f:
                out[name] = f.read()
        return out
    except OSError:
        return None


def exec_zygote(server, files: dict[str, bytes], preload: tuple[str, ...]) -> None:
    """Become the C engine: a fresh interpreter, still pid 1 of these namespaces, in this root.

    Only at full isolation (the C engine knows one way to clean up after a run: kill(-1) as pid 1, and
    one way to drop: the run's own uid); anything else stays on the Python engine.
    """
    os.mkdir(ZYGOTE_DIR, 0o755)  # root's, in the minimal root: readable by a run, not writable
    for name, data in files.items():
        fd = os.open(os.path.join(ZYGOTE_DIR, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    _isolation.seal_root()  # nothing more is written to the minimal root itself
    # The zygote adds the layers (seccomp where its filter installs) and its modules to this hello.
    hello = json.dumps({"uid": server.uid, "workroot": server.workroot, "outer_pid": server.outer,
                        "pidns": server.pidns, "engine": "c"})
    fd = server.sock.fileno()
    os.set_inheritable(fd, True)
    # LD_BIND_NOW: resolve every dynamic symbol now, once, instead of in each child (a lazy binding
    # writes the GOT: a copy-on-write fault plus a symbol lookup per first call; ~7% of a trivial run).
    env = dict(os.environ, LD_BIND_NOW="1")
    # Rootless (root of a user namespace): no uid drop, the child drops its capabilities instead.
    mode = f"{int(server.userns)},{server.nproc_extra},{_isolation.MALLOC_ARENAS},{_isolation.THREAD_STACK_BYTES}"
    os.execve(sys.executable, [sys.executable, "-I", os.path.join(ZYGOTE_DIR, "_zygote.py"), str(fd), str(server.uid),
                               str(server.gid), os.path.join(server.workroot, "run"), server.workroot,
                               ",".join(preload), hello, ",".join(server.layers), mode], env)


def seccomp_from(so_path: str | None, layers: list[str]) -> None:
    """Install the C engine's seccomp filter on this Python server (inherited by every child it forks).

    For the modes the C engine doesn't serve (no namespaces, no uid drop): the compiled module is on the
    host's tree, which these modes still see. Without it (LORAFLEET_SANDBOX_ENGINE=python, no compiler)
    the layer is simply missing.
    """
    if not so_path or not os.path.isfile(so_path):
        return
    try:
        from importlib.machinery import ExtensionFileLoader
        from importlib.util import module_from_spec, spec_from_loader

        loader = ExtensionFileLoader("_lorafleet_zygote", so_path)
        module = module_from_spec(spec_from_loader("_lorafleet_zygote", loader))
        loader.exec_module(module)
        # Without CAP_SYS_ADMIN (not root) the kernel takes a filter only with no_new_privs set; the
        # server never needs to gain privileges (every child sets it anyway).
        _isolation.prctl(_isolation.PR_SET_NO_NEW_PRIVS, 1)
        module.seccomp()
    except (ImportError, OSError):
        return
    layers.append("seccomp")
