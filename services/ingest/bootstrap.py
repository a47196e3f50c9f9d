"""The ingest service's real adapters, wired in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lorafleet.services.ingest.verify import Judge, sandbox_judge
from lorafleet.shared.settings import Settings


@dataclass
class Deps:
    work_root: Path  # per-job scratch: downloaded inputs, the spool, the dataset before upload
    judge: Judge  # the sandbox (warm fork servers), one worker per CPU


def bootstrap(settings: Settings) -> Deps:
    # As the evaluator: no start where the sandbox has only its reduced mode, unless opted into.
    from lorafleet.shared.sandbox import check_isolation

    check_isolation()
    root = Path(settings.data_dir).resolve() / "ingest" / "jobs"
    root.mkdir(parents=True, exist_ok=True)
    return Deps(work_root=root, judge=sandbox_judge())
