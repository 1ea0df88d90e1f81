"""The request cache under concurrency: a lock is waited on, never mistaken for damage."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import threading
import time

import pytest

from medslm.evaluate.cache import RequestCache
from medslm.outputs import OutputError


def _open_and_write(path: str, i: int, start) -> None:
    start.wait()
    c = RequestCache(path)
    c.put_many([(f"k{i}-{j}", {"i": i, "j": j}, 0.1) for j in range(50)])
    c.close()


def test_processes_opening_one_new_cache_at_once_keep_every_answer(tmp_path, capfd):
    """Four processes create the same new cache file in the same instant (CI once saw two evals do
    this: one took the other's lock for damage and moved the live database aside)."""
    ctx = mp.get_context("fork")
    for round_ in range(40):
        path = tmp_path / f"shared{round_}.sqlite"
        start = ctx.Event()
        procs = [ctx.Process(target=_open_and_write, args=(str(path), i, start)) for i in range(4)]
        for p in procs:
            p.start()
        start.set()
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0] * 4
        assert not list(tmp_path.glob("*.corrupt-*"))
        got = RequestCache(path).get_many([f"k{i}-{j}" for i in range(4) for j in range(50)])
        assert len(got) == 200 and got["k3-49"] == ({"i": 3, "j": 49}, 0.1)
    assert "damaged" not in capfd.readouterr().err


def test_a_cache_locked_past_the_wait_is_a_clear_error_and_is_left_alone(tmp_path):
    path = tmp_path / "held.sqlite"
    first = RequestCache(path)
    first.put_many([("a", 1, 0.0)])
    first.close()
    holder = sqlite3.connect(str(path), isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(OutputError, match=r"held\.sqlite stayed locked .*--cache"):
            RequestCache(path, lock_wait=0.5)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not list(tmp_path.glob("*.corrupt-*"))
    assert RequestCache(path).get_many(["a"]) == {"a": (1, 0.0)}


def test_a_lock_released_within_the_wait_is_waited_on(tmp_path):
    path = tmp_path / "new.sqlite"
    holder = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("CREATE TABLE answers (key TEXT PRIMARY KEY, value TEXT, seconds REAL)")
    timer = threading.Timer(1.0, lambda: holder.execute("COMMIT"))
    timer.start()
    t0 = time.monotonic()
    c = RequestCache(path, lock_wait=30)
    timer.join()
    assert time.monotonic() - t0 >= 0.9 and not list(tmp_path.glob("*.corrupt-*"))
    c.put_many([("a", 1, 0.0)])
    assert c.get_many(["a"]) == {"a": (1, 0.0)}


def test_a_file_that_is_not_a_database_is_still_moved_aside(tmp_path, capfd):
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    c = RequestCache(path)
    c.put_many([("a", 1, 0.0)])
    assert len(list(tmp_path.glob("junk.sqlite.corrupt-*"))) == 1
    assert "damaged" in capfd.readouterr().err
