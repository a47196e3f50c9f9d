"""Content-addressed answer cache: key = core.cache_key(model, prompt, params) → the endpoint's answer.

Stored in SQLite (stdlib) under `<data_dir>/enrich/cache.sqlite`, WAL mode.
Why SQLite rather than an append-only JSONL file: a committed answer is durable,
with no torn last line to repair after a SIGKILL; several processes on one host
(CLI runs, service replicas sharing a volume) can read and write it at once;
lookups are indexed, so a resumed 100k-example run doesn't re-read a whole log to
find what is missing. `synchronous=NORMAL` in WAL mode survives a crashed process
(the OS still has the pages); only a power cut can lose the last commits.

Answers are committed in small groups (every `commit_every` answers or
`commit_interval_s`, and on `flush()` / `close()`): a commit per answer cost
more CPU than the whole HTTP request at 300 requests/s. A crash loses at most
the last fraction of a second of answers, which costs re-requests, never a
wrong answer.

Every answered request is stored, including ones the quality checks reject:
those were paid for, and re-applying the (pure) checks on a cached answer is
free, so changing a check never needs new requests.
"""

from __future__ import annotations

import asyncio
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
    def __init__(self, path: str | Path, *, commit_every: int = 64, commit_interval_s: float = 0.25):
        self.path = Path(path)
        self.commit_every = commit_every
        self.commit_interval_s = commit_interval_s
        self._pending = 0
        self._first_pending = 0.0
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
        if self._pending == 0:
            self._db.execute("BEGIN")
            self._first_pending = time.monotonic()
        self._db.execute(
            "INSERT OR REPLACE INTO answers (key, model, text, finish_reason, usage, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (key, model, completion.text, completion.finish_reason, json.dumps(completion.usage), time.time()),
        )
        self._pending += 1
        if self._pending >= self.commit_every or time.monotonic() - self._first_pending >= self.commit_interval_s:
            self.flush()

    def flush(self) -> None:
        """Commit what `put` has written so far (other processes see it from now on)."""
        if self._pending:
            self._db.execute("COMMIT")
            self._pending = 0

    async def flush_periodically(self) -> None:
        """Run beside a long job so a quiet stretch never leaves answers uncommitted for long."""
        while True:
            await asyncio.sleep(self.commit_interval_s)
            self.flush()

    def keys(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT key FROM answers")}

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self.flush()
        self._db.close()

    def __enter__(self) -> "AnswerCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
