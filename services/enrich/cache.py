"""Content-addressed answer cache: key = core.cache_key(model, prompt, params) → the endpoint's answer.

Stored in SQLite (stdlib) under `<data_dir>/enrich/cache.sqlite`, WAL mode, one
commit per answer. Why SQLite rather than an append-only JSONL file: each answer
is durable the moment it is committed, so a SIGKILL loses at most the requests in
flight (no torn last line to repair); several processes on one host (CLI runs,
service replicas sharing a volume) can read and write it at once; lookups are
indexed, so a resumed 100k-example run doesn't re-read a whole log to find what
is missing. `synchronous=NORMAL` in WAL mode survives a crashed process (the OS
still has the pages); only a power cut can lose the last commits, which costs a
re-request, never a wrong answer.

Every answered request is stored, including ones the quality checks reject:
those were paid for, and re-applying the (pure) checks on a cached answer is
free, so changing a check never needs new requests.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from lorafleet.services.enrich.client import Completion

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT,
    usage TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""


class AnswerCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    @classmethod
    def in_data_dir(cls, data_dir: str | Path) -> "AnswerCache":
        return cls(Path(data_dir) / "enrich" / "cache.sqlite")

    def get(self, key: str) -> Completion | None:
        row = self._db.execute("SELECT text, finish_reason, usage FROM answers WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return Completion(text=row[0], finish_reason=row[1], usage=json.loads(row[2]))

    def put(self, key: str, model: str, completion: Completion) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO answers (key, model, text, finish_reason, usage, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (key, model, completion.text, completion.finish_reason, json.dumps(completion.usage), time.time()),
        )

    def keys(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT key FROM answers")}

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "AnswerCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
