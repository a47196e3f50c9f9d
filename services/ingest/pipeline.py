"""Entry point for a training config's data section: sources, or a train_file/eval_file pair."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorafleet.services.ingest.core import Progress, build
from lorafleet.services.ingest.prebuilt import build_from_files
from lorafleet.services.ingest.verify import Judge
from lorafleet.shared.config import DataSection, SourceSection
from lorafleet.shared.errors import ConfigError


def build_dataset(
    data: DataSection,
    *,
    judge: Judge | None,
    out_dir: str | Path | None,
    extra_sources: list[SourceSection] | None = None,
    progress: Progress | None = None,
    work_dir: str | Path | None = None,
) -> dict[str, Any]:
    extra = list(extra_sources or [])
    if data.train_file or data.eval_file:
        if data.sources or extra:
            raise ConfigError("data: set either train_file/eval_file or `sources`, not both")
        return build_from_files(data, judge=judge, out_dir=out_dir)
    return build([*data.sources, *extra], data, judge=judge, out_dir=out_dir, progress=progress, work_dir=work_dir)
