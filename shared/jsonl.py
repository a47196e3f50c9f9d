"""Reading JSON Lines files written by people or other tools: one clear error per bad line."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from lorafleet.shared.errors import LorafleetError


def iter_json_objects(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a .jsonl or .jsonl.gz file."""
    path = Path(path)
    if not path.is_file():
        raise LorafleetError(f"{path}: no such file")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise LorafleetError(f"{path}:{n}: not JSON ({e.msg}); expected one JSON object per line") from None
            if not isinstance(obj, dict):
                raise LorafleetError(f"{path}:{n}: expected a JSON object per line")
            yield n, obj
