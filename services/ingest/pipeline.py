"""Entry point for a training config's data section: sources, or a train_file/eval_file pair."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lorafleet.services.ingest.core import Progress, build
from lorafleet.services.ingest.prebuilt import build_from_files
from lorafleet.services.ingest.verify import Judge
from lorafleet.shared.config import DataSection, SourceSection

log = logging.getLogger("lorafleet.ingest")


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
        files_exist = all(f and Path(f).is_file() for f in (data.train_file, data.eval_file))
        if files_exist or not data.sources:
            if extra:
                log.warning("ingest: extra sources (%s) are ignored: data.train_file/eval_file are used as is",
                            ", ".join(s.type for s in extra))
            return build_from_files(data, judge=judge, out_dir=out_dir)
        # Both given and the files are not there (yet): the sources build the dataset.
        log.info("ingest: data.train_file/eval_file not found, building from data.sources instead")
    return build([*data.sources, *extra], data, judge=judge, out_dir=out_dir, progress=progress, work_dir=work_dir)
