"""Enrich a dataset directory (train.jsonl, eval.jsonl, eval_problems.jsonl, manifest.json) into a new one.

The output is written under a temporary name beside the destination and renamed
into place only when complete: a failed or killed run leaves no partial dataset.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from lorafleet.services.enrich import core
from lorafleet.services.enrich.cache import AnswerCache
from lorafleet.services.enrich.client import EndpointDown
from lorafleet.services.enrich.pipeline import Progress, Target, enrich_examples, make_client, run_stats
from lorafleet.shared.config import EnrichSection
from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.problems import TrainExample

SPLIT_FILES = {"train": "train.jsonl", "eval": "eval.jsonl"}


def read_examples(path: Path) -> list[TrainExample]:
    examples = []
    with path.open() as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                examples.append(TrainExample.model_validate_json(line))
            except ValueError as exc:
                raise LorafleetError(f"{path}:{lineno}: not a TrainExample line ({str(exc).splitlines()[0]})") from None
    return examples


def write_examples(path: Path, examples: list[TrainExample]) -> None:
    with path.open("w") as f:
        for example in examples:
            f.write(example.model_dump_json() + "\n")


def check_dataset_dir(src: Path) -> None:
    if not src.is_dir():
        raise LorafleetError(f"dataset directory {src} not found: pass the directory that holds train.jsonl")
    if not (src / "train.jsonl").is_file():
        raise LorafleetError(f"{src} has no train.jsonl: pass a dataset directory written by `lorafleet data ingest`")


def publish_dir(tmp: Path, dest: Path) -> None:
    """Move a finished directory into place, replacing an older one at `dest`."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        dest.rename(old)
    tmp.rename(dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_output(src: Path, dest: Path, splits: dict[str, list[TrainExample]], manifest_extra: dict[str, Any]) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        for item in src.iterdir():
            if item.name in {SPLIT_FILES[s] for s in splits} or item.name == "manifest.json":
                continue
            if item.is_dir():
                shutil.copytree(item, tmp / item.name)
            else:
                shutil.copy2(item, tmp / item.name)
        for split, examples in splits.items():
            write_examples(tmp / SPLIT_FILES[split], examples)
        manifest_path = src / "manifest.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        manifest.update(manifest_extra)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        publish_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def passthrough_dataset(src: Path, dest: Path, reason: str) -> dict[str, Any]:
    """No endpoint: the same examples, stats `skipped`."""
    check_dataset_dir(src)
    stats = core.skipped_stats(reason)
    present = {s: read_examples(src / f) for s, f in SPLIT_FILES.items() if (src / f).is_file()}
    _write_output(src, dest, present, {"enrich": stats})
    return stats


async def enrich_dataset(
    src: Path,
    dest: Path,
    cfg: EnrichSection,
    target: Target,
    cache: AnswerCache,
    progress: Progress | None = None,
    on_total: Any = None,
) -> dict[str, Any]:
    """Enrich the configured splits of `src` into `dest`; returns the stats (also written to the manifest).

    Raises EndpointError (fatal), EndpointDown (retriable), or EndpointDown when more than
    `max_failed_fraction` of the examples failed (also retriable: the cache keeps what was answered).
    """
    check_dataset_dir(src)
    started = time.monotonic()
    splits = {s: read_examples(src / SPLIT_FILES[s]) for s in cfg.splits if (src / SPLIT_FILES[s]).is_file()}
    flat = [e for examples in splits.values() for e in examples]
    if on_total is not None:
        on_total(len(flat))
    async with make_client(target, cfg) as client:  # checks the endpoint before its first request
        enriched, stats = await enrich_examples(flat, client=client, cache=cache, cfg=cfg, progress=progress)
        result = run_stats(stats, client, target, started)
    if core.too_many_failures(stats, cfg.max_failed_fraction):
        raise EndpointDown(
            f"enrich endpoint {target.endpoint}: {stats.failed} of {stats.total} examples failed "
            f"({dict(stats.failed_by)}), above enrich.max_failed_fraction={cfg.max_failed_fraction}; "
            "answers so far are cached, a retry asks only for the rest"
        )
    result["splits"] = {s: len(v) for s, v in splits.items()}
    out: dict[str, list[TrainExample]] = {}
    i = 0
    for split, examples in splits.items():
        out[split] = enriched[i : i + len(examples)]
        i += len(examples)
    _write_output(src, dest, out, {"enrich": result})
    return result
