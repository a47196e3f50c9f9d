"""The C engine (zygote.c), compiled once per machine and interpreter into the cache.

`LORAFLEET_SANDBOX_ENGINE`: `auto` (default: the C engine where it builds, else the Python engine, with
one warning), `c` (fail where it can't be built), `python` (never build). The library is keyed by the
hash of the source, the interpreter and the compiler command, written under a temporary name and renamed,
so concurrent builders never load a half-written file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path

from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.settings import default_cache_dir

SOURCE = Path(__file__).with_name("zygote.c")
ENGINES = ("auto", "c", "python")
log = logging.getLogger(__name__)
_lock = threading.Lock()
_built: dict[str, Path | None] = {}


class EngineUnavailable(LorafleetError):
    """LORAFLEET_SANDBOX_ENGINE=c and the C engine can't be built here."""


def engine_setting() -> str:
    engine = os.environ.get("LORAFLEET_SANDBOX_ENGINE", "auto").strip().lower() or "auto"
    if engine not in ENGINES:
        raise LorafleetError(f"LORAFLEET_SANDBOX_ENGINE={engine!r}: expected one of {', '.join(ENGINES)}")
    return engine


def compile_command(source: Path, target: Path) -> list[str]:
    cc = shlex.split(os.environ.get("CC") or "cc")
    include = sysconfig.get_paths()["include"]
    return [*cc, "-O2", "-shared", "-fPIC", "-Wall", f"-I{include}", str(source), "-o", str(target)]


def zygote_library(engine: str | None = None) -> Path | None:
    """Path of the compiled C engine, or None for the Python engine (see the module's docstring)."""
    engine = engine or engine_setting()
    if engine == "python":
        return None
    with _lock:
        if engine not in _built:
            _built[engine] = _build(engine)
        return _built[engine]


def _build(engine: str) -> Path | None:
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, sys.version.encode(),
                                     " ".join(compile_command(Path("s"), Path("t"))).encode()])).hexdigest()[:16]
    target = default_cache_dir() / "sandbox" / f"_lorafleet_zygote-{key}.so"
    if target.is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
        os.close(fd)
        try:
            proc = subprocess.run(compile_command(SOURCE, Path(tmp)), capture_output=True, text=True, timeout=120)
            if proc.returncode != 0:
                raise OSError(f"the compiler said: {(proc.stderr or proc.stdout).strip()[-2000:]}")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except (OSError, subprocess.SubprocessError) as e:
        reason = (f"can't build the sandbox's C engine ({' '.join(compile_command(SOURCE, target))}): {e}. "
                  "It needs a C compiler and Python's headers (Debian: apt install gcc python3-dev)")
        if engine == "c":
            raise EngineUnavailable(f"{reason}; or set LORAFLEET_SANDBOX_ENGINE=auto to fall back") from e
        log.warning("%s; using the slower Python engine (LORAFLEET_SANDBOX_ENGINE=python hides this warning)", reason)
        return None
    return target
