"""The dataset artifact directory: train.jsonl, eval.jsonl (TrainExample lines),
eval_problems.jsonl (Problem lines with tests), manifest.json.

Everything goes to a hidden temporary directory beside the destination, which is
renamed into place only when complete: a failed run leaves nothing that looks
finished (and an older dataset at the same path stays until the new one is whole).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from pydantic import BaseModel

FILES = ("train.jsonl", "eval.jsonl", "eval_problems.jsonl")


class DatasetWriter:
    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.tmp-", dir=self.out_dir.parent))
        self.tmp.chmod(0o755)  # mkdtemp makes it private; the finished dataset is an ordinary directory
        self._files: dict[str, IO[str]] = {name: open(self.tmp / name, "w", encoding="utf-8") for name in FILES}
        self.counts = dict.fromkeys(FILES, 0)

    def write(self, name: str, model: BaseModel) -> None:
        self._files[name].write(model.model_dump_json() + "\n")
        self.counts[name] += 1

    def commit(self, manifest: dict[str, Any]) -> Path:
        for f in self._files.values():
            f.close()
        (self.tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
        old = None
        if self.out_dir.exists():
            old = self.out_dir.with_name(f".{self.out_dir.name}.old-{self.tmp.name[-8:]}")
            self.out_dir.rename(old)
        self.tmp.rename(self.out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out_dir

    def abort(self) -> None:
        for f in self._files.values():
            f.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.tmp.exists():
            self.abort()
