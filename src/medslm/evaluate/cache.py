"""An on-disk request cache: kill -9 at any moment, rerun, and only unfinished requests run.

SQLite (WAL journal) keyed by SHA-256 of (backend cache key, request type, request fields). Each
batch of answers is committed as soon as it is computed, so an interrupted run loses at most the
batch in flight. Values are stored as JSON with the seconds the request took (for latency).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import asdict
from pathlib import Path
from typing import Any


def request_key(backend_key: str, kind: str, req: Any) -> str:
    payload = json.dumps([backend_key, kind, asdict(req)], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


class RequestCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=60)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT, seconds REAL)")
        self.db.commit()

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
