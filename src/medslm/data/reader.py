"""Strict or lenient reading of dataset files.

Strict (the default) raises one :class:`DataError` naming the file, the record (line or id) and the
field. Lenient skips bad records and counts them by reason; the caller reports the counts.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from medslm.errors import DataError


class Reader:
    def __init__(self, dataset: str, lenient: bool = False):
        self.dataset = dataset
        self.lenient = lenient
        self.skipped: Counter[str] = Counter()

    def bad(self, file: Path | str, record: Any, field: str | None, why: str) -> None:
        """Report a bad record: raise (strict) or count it (lenient). The caller skips it."""
        where = f"{file}: record {record}" + (f", field {field!r}" if field else "")
        if not self.lenient:
            raise DataError(f"{self.dataset}: {where}: {why} (use --lenient to skip bad records)")
        self.skipped[f"{field or 'record'}: {why}"] += 1

    # ---------------------------------------------------------------- helpers
    def text(self, file: Path) -> str | None:
        try:
            return file.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{self.dataset}: {file}: not UTF-8 text (byte {e.start}); "
                            "re-save the file as UTF-8") from e
        except OSError as e:
            raise DataError(f"{self.dataset}: {file}: cannot read ({e.strerror})") from e

    def json(self, file: Path) -> Any:
        try:
            return json.loads(self.text(file))
        except json.JSONDecodeError as e:
            raise DataError(f"{self.dataset}: {file}: invalid JSON at line {e.lineno}, column "
                            f"{e.colno} ({e.msg}); the file is truncated or damaged") from e

    def jsonl(self, file: Path) -> Iterator[tuple[int, dict]]:
        for i, line in enumerate(self.text(file).splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                self.bad(file, f"line {i}", None, f"invalid JSON ({e.msg})")
                continue
            if not isinstance(rec, dict):
                self.bad(file, f"line {i}", None, f"expected a JSON object, got {type(rec).__name__}")
                continue
            yield i, rec

    def csv(self, file: Path, required: list[str], delimiter: str = ",",
            header: list[str] | None = None) -> Iterator[tuple[int, dict]]:
        import io

        text = self.text(file)
        rows = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)  # quoted newlines ok
        if header is None:
            try:
                header = [h.strip().lstrip("\ufeff") for h in next(rows)]
            except StopIteration:
                raise DataError(f"{self.dataset}: {file}: empty file (no header)") from None
        lower = [h.lower() for h in header]
        missing = [c for c in required if c.lower() not in lower]
        if missing:
            raise DataError(f"{self.dataset}: {file}: missing column(s) {missing}; found {header}"
                            + (f" (is the delimiter {delimiter!r} right?)" if len(header) == 1 else ""))
        for row in rows:
            i = rows.line_num  # the (last) physical line of this record
            if not row:
                continue
            if len(row) != len(header):
                self.bad(file, f"line {i}", None, f"{len(row)} columns, expected {len(header)}")
                continue
            yield i, dict(zip(lower, row))

    def field(self, file, record, rec: dict, name: str, typ: type | tuple = str,
              nonempty: bool = True) -> Any:
        """Get a required field; None (after reporting) when missing, of the wrong type or empty."""
        if name not in rec or rec[name] is None:
            self.bad(file, record, name, "missing")
            return None
        v = rec[name]
        if not isinstance(v, typ) or isinstance(v, bool) and typ in (int, float, (int, float)):
            self.bad(file, record, name, f"expected {getattr(typ, '__name__', typ)}, got "
                     f"{type(v).__name__} {v!r:.40}")
            return None
        if nonempty and isinstance(v, str) and not v.strip():
            self.bad(file, record, name, "empty")
            return None
        return v

    def summary(self) -> str:
        if not self.skipped:
            return ""
        total = sum(self.skipped.values())
        reasons = "; ".join(f"{n} x {why}" for why, n in self.skipped.most_common())
        return f"{self.dataset}: skipped {total} bad record(s): {reasons}"
