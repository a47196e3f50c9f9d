"""The fork server's wire format: fixed binary headers, then the blobs they announce.

Spoken by the harness (pool.py), the Python engine (_server.py) and the C engine (zygote.c, which
declares the same two structs: change them together). Binary, not JSON, so that the C engine parses a
request with one read and no allocation. Standard library only (_server.py imports it as a script).

request:  REQUEST header, then code, stdin, payload (JSON of the test and nonce; empty for a plain run).
          The server hands the child the same header with code and payload, without stdin.
response: RESPONSE header, then setup text, error text, stdout, stderr.
"""

from __future__ import annotations

import json
import socket
import struct

REQUEST = struct.Struct("=IIddQQQQIIQQQ")  # magic, idle_ms, cpu_s, wall_s, memory, fsize, stdout cap,
#                                            stderr cap, nofile, nproc, len(code), len(stdin), len(payload)
RESPONSE = struct.Struct("=IiiIddqIIIIQQ")  # magic, exit code, signal, killed_for, wall_ms, cpu_ms, maxrss_kb,
#                                             flags, len(setup), len(error), reserved, len(stdout), len(stderr)
REQUEST_MAGIC = 0x4C465251  # "LFRQ"
RESPONSE_MAGIC = 0x4C465253  # "LFRS"
STDOUT_TRUNCATED, STDERR_TRUNCATED, EXITED, SIGNALED, SETUP_OK = 1, 2, 4, 8, 16
KILLED_FOR = (None, "wall", "output", "idle")  # idle: wall time not spent waiting for a CPU passed idle_s


def pack_request(limits: dict, code: bytes, stdin: bytes, payload: bytes) -> bytes:
    """One request: `limits` as RunLimits.wire() gives it."""
    head = REQUEST.pack(
        REQUEST_MAGIC, round(limits["idle_s"] * 1000), float(limits["cpu_s"]), float(limits["wall_s"]), limits["memory_bytes"],
        limits["fsize_bytes"], limits["stdout_cap"], limits["stderr_cap"], limits["nofile"], limits["nproc"],
        len(code), len(stdin), len(payload),
    )
    return b"".join((head, code, stdin, payload))


def unpack_request(raw: bytes) -> tuple[dict, int, int, int]:
    """(limits, len(code), len(stdin), len(payload)) of a request header."""
    (magic, idle_ms, cpu_s, wall_s, memory, fsize, out_cap, err_cap, nofile, nproc, n_code, n_stdin,
     n_payload) = REQUEST.unpack(raw)
    if magic != REQUEST_MAGIC:
        raise ValueError(f"not a sandbox request (magic {magic:#x})")
    limits = {"cpu_s": cpu_s, "idle_s": idle_ms / 1000, "wall_s": wall_s, "memory_bytes": memory, "fsize_bytes": fsize,
              "stdout_cap": out_cap, "stderr_cap": err_cap, "nofile": nofile, "nproc": nproc}
    return limits, n_code, n_stdin, n_payload


def pack_response(head: dict, stdout: bytes = b"", stderr: bytes = b"") -> bytes:
    """The Python engine's answer; `head` as run_result() reads it (or {"error": text})."""
    error = head.get("error", "").encode()
    if error:
        return RESPONSE.pack(RESPONSE_MAGIC, 0, 0, 0, 0.0, 0.0, 0, 0, 0, len(error), 0, 0, 0) + error
    setup = (head["setup_error"] or "").encode()
    flags = ((STDOUT_TRUNCATED if head["stdout_truncated"] else 0) | (STDERR_TRUNCATED if head["stderr_truncated"] else 0)
             | (EXITED if head["exit_code"] is not None else 0) | (SIGNALED if head["signal"] is not None else 0)
             | (SETUP_OK if head["setup_error"] is None else 0))
    raw = RESPONSE.pack(
        RESPONSE_MAGIC, head["exit_code"] or 0, head["signal"] or 0, KILLED_FOR.index(head["killed_for"]),
        head["wall_ms"], head["cpu_ms"], head["maxrss_kb"], flags, len(setup), 0, 0, len(stdout), len(stderr),
    )
    return b"".join((raw, setup, stdout, stderr))


def unpack_response(raw: bytes) -> tuple[dict, tuple[int, int, int, int]]:
    """(head, (len(setup), len(error), len(stdout), len(stderr))); the texts follow in that order."""
    (magic, code, sig, killed, wall_ms, cpu_ms, maxrss, flags, n_setup, n_error, _, n_out,
     n_err) = RESPONSE.unpack(raw)
    if magic != RESPONSE_MAGIC:
        raise ValueError(f"not a sandbox response (magic {magic:#x})")
    head = {
        "exit_code": code if flags & EXITED else None,
        "signal": sig if flags & SIGNALED else None,
        "killed_for": KILLED_FOR[killed],
        "wall_ms": wall_ms,
        "cpu_ms": cpu_ms,
        "maxrss_kb": maxrss,
        "setup_ok": bool(flags & SETUP_OK),
        "stdout_truncated": bool(flags & STDOUT_TRUNCATED),
        "stderr_truncated": bool(flags & STDERR_TRUNCATED),
    }
    return head, (n_setup, n_error, n_out, n_err)


def finish_head(head: dict, setup: bytes, error: bytes) -> dict:
    """Fold the setup and error texts into the head that run_result() reads."""
    if error:
        return {"error": error.decode(errors="replace")}
    ok = head.pop("setup_ok")
    head["setup_error"] = None if ok else (setup.decode(errors="replace") or "child died during setup")
    return head


# ---------------------------------------------------------------- framing of the JSON messages (hello, setup)

_LEN = struct.Struct("!I")


def send_msg(sock: socket.socket, header: dict, blobs: tuple[bytes, ...] = ()) -> None:
    header = dict(header, blobs=[len(b) for b in blobs])
    raw = json.dumps(header).encode()
    sock.sendall(b"".join((_LEN.pack(len(raw)), raw, *blobs)))


def recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            return None
        got += k
    return bytes(buf)


def recv_msg(sock: socket.socket) -> tuple[dict, list[bytes]] | None:
    head = recv_exact(sock, _LEN.size)
    if head is None:
        return None
    raw = recv_exact(sock, _LEN.unpack(head)[0])
    if raw is None:
        return None
    header = json.loads(raw)
    blobs = []
    for size in header.pop("blobs", []):
        blob = recv_exact(sock, size) if size else b""
        if blob is None:
            return None
        blobs.append(blob)
    return header, blobs
