"""Reading rows from local files or the hub, one at a time.

- `.jsonl` / `.jsonl.gz`: read line by line here, so one bad line (non-UTF-8,
  broken JSON) is counted and skipped; `datasets`' JSON reader fails the whole
  file on such a line.
- `.parquet`: record batches through pyarrow (what `datasets` reads parquet with;
  `load_dataset("parquet", streaming=True)` spends ~2 s setting up a builder per file).
- `.json`, a `save_to_disk` directory, a hub name: through `datasets` (streaming or
  memory-mapped, never a whole source in memory).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

from lorafleet.services.ingest.normalise import Malformed
from lorafleet.shared.errors import LorafleetError

FILE_KINDS = ".jsonl, .jsonl.gz, .json, .parquet or a `save_to_disk` directory"


def rows(path: str | None = None, hub_name: str | None = None, split: str | None = None) -> Iterator[dict[str, Any] | Malformed]:
    """Yield each row as a dict, or a `Malformed` for a row that can't be decoded."""
    if path:
        p = Path(path)
        if not p.exists():
            raise LorafleetError(f"data file {p} not found: pass an existing {FILE_KINDS}")
        yield from _local_rows(p, split)
    elif hub_name:
        yield from _hub_rows(hub_name, split)
    else:
        raise LorafleetError("a source needs `path` (a local file or directory) or `hub_name`")


def _local_rows(p: Path, split: str | None) -> Iterator[dict[str, Any] | Malformed]:
    name = p.name.lower()
    if p.is_dir():
        yield from _saved_rows(p, split)
    elif name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        yield from _jsonl_rows(p)
    elif name.endswith((".json", ".json.gz")):
        yield from _datasets_rows("json", p, split)
    elif name.endswith(".parquet"):
        yield from _parquet_rows(p)
    else:
        raise LorafleetError(f"{p}: unsupported file type; use {FILE_KINDS}")


def _jsonl_rows(p: Path) -> Iterator[dict[str, Any] | Malformed]:
    opener = gzip.open if p.name.lower().endswith(".gz") else open
    try:
        with opener(p, "rb") as f:
            for raw in f:
                if not raw.strip():
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    yield Malformed("non_utf8", "line is not UTF-8")
                    continue
                try:
                    row = json.loads(line)
                except (json.JSONDecodeError, RecursionError) as exc:
                    yield Malformed("bad_json", str(exc)[:80])
                    continue
                yield row if isinstance(row, dict) else Malformed("not_an_object", type(row).__name__)
    except (OSError, EOFError) as exc:  # truncated gzip, unreadable file
        raise LorafleetError(f"{p}: can't read it ({exc}); re-download or re-export the file") from None


def _parquet_rows(p: Path, batch_size: int = 64) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(p)
        for batch in reader.iter_batches(batch_size=batch_size):
            yield from batch.to_pylist()
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise LorafleetError(f"{p}: not a readable parquet file ({str(exc)[:200]})") from None


def _datasets_iter(ds: Any, what: str) -> Iterator[dict[str, Any]]:
    try:
        yield from ds
    except LorafleetError:
        raise
    except Exception as exc:  # arrow/json errors surface mid-iteration
        raise LorafleetError(f"{what}: can't read rows ({type(exc).__name__}: {str(exc)[:200]})") from None


def _datasets_rows(kind: str, p: Path, split: str | None) -> Iterator[dict[str, Any]]:
    import datasets

    try:
        ds = datasets.load_dataset(kind, data_files=str(p), split="train", streaming=True)
    except Exception as exc:
        raise LorafleetError(f"{p}: not a readable {kind} file ({str(exc)[:200]})") from None
    yield from _datasets_iter(ds, str(p))


def _saved_rows(p: Path, split: str | None) -> Iterator[dict[str, Any]]:
    import datasets

    if not any((p / marker).exists() for marker in ("dataset_info.json", "state.json", "dataset_dict.json")):
        raise LorafleetError(f"{p} is a directory but not a `save_to_disk` dataset; pass a file ({FILE_KINDS})")
    try:
        ds = datasets.load_from_disk(str(p))
    except Exception as exc:
        raise LorafleetError(f"{p}: can't load the saved dataset ({str(exc)[:200]})") from None
    if isinstance(ds, datasets.DatasetDict):
        chosen = split or ("train" if "train" in ds else next(iter(ds), None))
        if chosen not in ds:
            raise LorafleetError(f"{p}: no split {chosen!r}; splits are {', '.join(ds)} (set `split`)")
        ds = ds[chosen]
    yield from _datasets_iter(ds, str(p))


def _hub_rows(hub_name: str, split: str | None) -> Iterator[dict[str, Any]]:
    import datasets

    try:
        ds = datasets.load_dataset(hub_name, split=split or "train", streaming=True)
    except Exception as exc:
        raise LorafleetError(
            f"can't open hub dataset {hub_name!r} ({str(exc)[:200]}); without network access, "
            "download it elsewhere and pass `path` to the saved file or directory"
        ) from None
    yield from _datasets_iter(ds, hub_name)


def input_hash(path: str | None) -> str | None:
    """sha256 of a local input (a directory: of its files' names and contents), streamed."""
    if not path or not Path(path).exists():
        return None
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()
