"""The C engine's interpreter: preload, freeze, then let zygote.c's serve() fork one child per run.

_server.py execs `python -I /.lorafleet-zygote/_zygote.py FD UID GID WORKDIR WORKROOT PRELOAD HELLO LAYERS MODE` once
the namespaces and the minimal root are in place (this directory is a root-owned copy inside that root).
A fresh interpreter holds only what a child needs, so each fork copies less than a fork of the process
that set everything up. serve() returns None when the harness leaves, and (code, payload) in a child.
"""

import os
import sys


def main(argv: list[str]) -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _lorafleet_zygote
    import _runner

    del sys.path[0]
    fd, uid, gid = int(argv[0]), int(argv[1]), int(argv[2])
    workdir, workroot = argv[3], argv[4]
    for name in filter(None, argv[5].split(",")):
        try:
            __import__(name)
        except ImportError:
            pass
    # MODE: rootless (0/1), extra processes RLIMIT_NPROC counts, malloc arenas, thread stack (_isolation.fit_threads)
    rootless, nproc_extra, arenas, stack = (int(x) for x in argv[8].split(","))
    import _thread

    _thread.stack_size(stack)
    _runner.prepare_children(workdir)
    layers = argv[7].split(",")
    try:
        _lorafleet_zygote.seccomp()  # inherited by every child
        layers.append("seccomp")
    except OSError:
        pass  # a kernel without seccomp: the hello says so (the layer is missing)
    import gc

    gc.collect()
    gc.freeze()  # keeps the children's copy-on-write pages shared
    # The hello (_wire.send_msg's framing) plus the layers and the modules a program finds already
    # imported here: such names need no JSON escaping, and json itself may not be in this image.
    names = lambda items: ", ".join(f'"{x}"' for x in items)  # noqa: E731
    hello = (argv[6][:-1] + f', "layers": [{names(layers)}], "modules": [{names(sorted(sys.modules))}]}}').encode()
    os.write(fd, len(hello).to_bytes(4, "big") + hello)
    got = _lorafleet_zygote.serve(fd, uid, gid, workdir, workroot, rootless, nproc_extra, arenas)
    if got is None:
        return  # the harness closed the socket; the namespace ends with this process
    code, payload = got
    os._exit(_runner.run_program(payload, code.decode("utf-8", errors="replace")))


if __name__ == "__main__":
    main(sys.argv[1:])
