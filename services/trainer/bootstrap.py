"""The trainer's real adapters, wired in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lorafleet.shared.settings import Settings


@dataclass
class Deps:
    work_root: Path  # per-job scratch: the downloaded dataset, the adapter before upload
    checkpoint_root: Path  # durable: survives a trainer crash, so a redelivered job resumes
    judge: Callable | None  # judge_many; None = train.py imports the sandbox's


def bootstrap(settings: Settings) -> Deps:
    import datasets

    from lorafleet.shared.sandbox import judge_many

    datasets.disable_progress_bars()  # per-map progress bars flood service logs; progress goes out as events

    root = Path(settings.data_dir).resolve() / "trainer"
    (root / "jobs").mkdir(parents=True, exist_ok=True)
    (root / "checkpoints").mkdir(parents=True, exist_ok=True)
    return Deps(work_root=root / "jobs", checkpoint_root=root / "checkpoints", judge=judge_many)
