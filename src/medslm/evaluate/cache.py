"""An on-disk request cache: kill -9 at any moment, rerun, and only unfinished requests run.

SQLite (WAL journal) keyed by SHA-256 of (backend cache key, request type, request fields). Each
batch of answers is committed as soon as it is computed, so an interrupted run loses at most the
batch in flight. Values are stored as JSON with the seconds the request took (for latency).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from medslm.outputs import OutputError


def _is_lock(e: sqlite3.OperationalError) -> bool:
    msg = str(e).lower()
    return "locked" in msg or "busy" in msg


def request_key(backend_key: str, kind: str, req: Any) -> str:
    payload = json.dumps([backend_key, kind, asdict(req)], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


class RequestCache:
    """Several processes may share one cache file (SQLite's locking; a 60 s busy timeout). A file
    that is not a valid database is moved aside with a warning and a new cache is started: a
    damaged cache costs recomputation, never a failed run or a wrong answer.

    A cache another process holds locked is not damaged: SQLite reports a lock as
    ``OperationalError`` (a subclass of ``DatabaseError``), and switching a new file to WAL does
    not always wait on the busy timeout, so opening retries on a lock for up to 60 s and only a
    file SQLite cannot read as a database is moved aside (two evals opening one new cache at once
    had moved each other's live database away)."""

    def __init__(self, path: str | Path, lock_wait: float = 60.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock_wait = lock_wait
        try:
            self.db = self._open_waiting()
        except sqlite3.OperationalError as e:
            why = (f"stayed locked by another process for {lock_wait:.0f} s" if _is_lock(e)
                   else "cannot be opened")
            raise OutputError(f"the request cache {self.path} {why} ({e}); pass a different "
                              "--cache FILE or wait for the other run to finish") from None
        except sqlite3.DatabaseError as e:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            for suffix in ("", "-wal", "-shm"):
                f = Path(str(self.path) + suffix)
                if f.exists():
                    os.replace(f, str(aside) + suffix)
            print(f"medslm: warning: the request cache {self.path} is damaged ({e}); moved it to {aside} "
                  "and started a new one (answers are recomputed)", file=sys.stderr)
            self.db = self._open_waiting()

    def _open_waiting(self) -> sqlite3.Connection:
        deadline = time.monotonic() + self.lock_wait
        pause = 0.05
        while True:
            try:
                return self._open()
            except sqlite3.OperationalError as e:
                if not _is_lock(e) or time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 1.0)

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), timeout=self.lock_wait)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT, seconds REAL)")
            db.commit()
            ok = db.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {ok}")
            cols = [r[1] for r in db.execute("PRAGMA table_info(answers)")]
            if cols != ["key", "value", "seconds"]:
                raise sqlite3.DatabaseError(f"table 'answers' has columns {cols}")
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def get_many(self, keys: list[str]) -> dict[str, tuple[Any, float]]:
        out = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            q = f"SELECT key, value, seconds FROM answers WHERE key IN ({','.join('?' * len(chunk))})"
            for k, v, s in self.db.execute(q, chunk):
                out[k] = (json.loads(v), s)
        return out

    def put_many(self, items: list[tuple[str, Any, float]]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?, ?)",
                            [(k, json.dumps(v), s) for k, v, s in items])
        self.db.commit()

    def close(self) -> None:
        self.db.close()
