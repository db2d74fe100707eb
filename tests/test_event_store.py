"""Processes racing to create the event store.

The rest of the schema's tests run in-process: tests/unit/test_event_store_schema.py.
"""
import multiprocessing
import sqlite3

import pytest

from hueyscope.events.schema import TABLES, migrations, open_event_store


def _open(path, barrier, results):
    barrier.wait()
    try:
        open_event_store(path).close()
        results.put("ok")
    except Exception as exc:  # reported to the parent, asserted there
        results.put(repr(exc))


@pytest.mark.timeout(60)
def test_processes_creating_the_store_at_once_all_succeed(tmp_path):
    """A producer and consumers often create the same store at the same moment."""
    ctx = multiprocessing.get_context("fork")
    for attempt in range(8):
        path = str(tmp_path / ("events-%d.db" % attempt))
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_open, args=(path, barrier, results))
                 for _ in range(4)]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=30) for _ in procs]
        for p in procs:
            p.join(10)
        assert outcomes == ["ok"] * 4
        with sqlite3.connect(path) as conn:
            names = {r[0] for r in conn.execute(
                "select name from sqlite_master where type = 'table'")}
            applied = conn.execute(
                "select count(*) from _sqlite_migrations").fetchone()[0]
        assert set(TABLES) <= names
        assert applied == len(migrations._migrations)  # each once
