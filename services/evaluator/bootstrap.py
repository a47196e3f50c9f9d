"""The evaluator's real adapters, wired in one place: sandbox judge, generation
backends (one loaded at a time, reused across shards of the same adapter), a
per-process work directory for downloaded adapters and problem sets."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorafleet.services.evaluator.backends import Backend, make_backend
from lorafleet.services.evaluator.judging import make_judge
from lorafleet.services.evaluator.scoring import JudgeFn
from lorafleet.shared.settings import Settings

KV_BUCKET = "lorafleet-evaluations"


@dataclass
class Deps:
    work_dir: Path
    judge: JudgeFn
    replica: str
    backend_factory: Any = make_backend
    _backend_key: tuple | None = None
    _backend: Backend | None = None
    files: dict[str, Path] = field(default_factory=dict)  # artifact sha256 -> local copy

    async def backend(self, key: tuple, **kwargs: Any) -> Backend:
        """The backend for `key`; a different key closes the previous one first (bounded memory)."""
        import asyncio

        if self._backend is not None and self._backend_key == key:
            return self._backend
        await self.close_backend()
        self._backend = await asyncio.to_thread(self.backend_factory, **kwargs)
        self._backend_key = key
        return self._backend

    async def close_backend(self) -> None:
        if self._backend is not None:
            await self._backend.aclose()
        self._backend, self._backend_key = None, None

    def cleanup(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)


def bootstrap(settings: Settings) -> Deps:
    # Refuse to start where the sandbox could only run generated code in its reduced mode (a container
    # without user namespaces, ...) unless LORAFLEET_SANDBOX_ALLOW_REDUCED=1: IsolationUnavailable names
    # the setting that blocks it. Also warms one sandbox server before the first adapter arrives.
    from lorafleet.shared.sandbox import check_isolation

    check_isolation()
    root = settings.data_dir / "evaluator"
    root.mkdir(parents=True, exist_ok=True)
    # per process: replicas on one machine share data_dir but must not swap files under each other
    work = Path(tempfile.mkdtemp(prefix=f"replica-{os.getpid()}-", dir=root))
    workers = int(os.environ["LORAFLEET_EVAL_SANDBOX_WORKERS"]) if os.environ.get("LORAFLEET_EVAL_SANDBOX_WORKERS") else None
    return Deps(work_dir=work, judge=make_judge(workers), replica=f"{socket.gethostname()}:{os.getpid()}")
