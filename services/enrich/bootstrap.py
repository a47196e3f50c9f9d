"""The enrich service's real adapters, wired in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lorafleet.services.enrich.cache import AnswerCache
from lorafleet.shared.settings import Settings


@dataclass
class Deps:
    work_root: Path  # per-job scratch: the downloaded dataset and the enriched copy before upload
    cache: AnswerCache  # durable: a redelivered or rerun job pays only for the missing answers


def bootstrap(settings: Settings) -> Deps:
    root = Path(settings.data_dir).resolve() / "enrich"
    (root / "jobs").mkdir(parents=True, exist_ok=True)
    return Deps(work_root=root / "jobs", cache=AnswerCache.in_data_dir(settings.data_dir))
