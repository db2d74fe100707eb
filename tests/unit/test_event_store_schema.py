"""The event store's schema: creation, migrations, indexes, refusals, in-process.

(Processes racing to create one store: tests/test_event_store.py.)
"""
import sqlite3

import pytest

from hueyscope.events.schema import check_event_store, open_event_store


def test_a_store_being_created_is_not_mistaken_for_a_foreign_file(tmp_path):
    path = tmp_path / "events.db"
    with sqlite3.connect(path) as conn:
        conn.execute("create table _sqlite_migrations (id integer primary key)")
    check_event_store(str(path), must_exist=False)
    with sqlite3.connect(path) as conn:
        conn.execute("create table invoices (id integer primary key)")
    with pytest.raises(ValueError, match="not a hueyscope event store"):
        check_event_store(str(path), must_exist=False)


def test_a_store_from_before_task_seq_is_upgraded_in_place(tmp_path):
    """m003 numbers the tasks an older store holds and links its events."""
    from sqlite_utils import Database, Migrations

    from hueyscope.events import queries, schema

    path = str(tmp_path / "events.db")
    older = Migrations("hueyscope")
    older()(schema.m001_initial)
    older()(schema.m002_percentile_indexes)
    db = Database(path)
    older.apply(db)
    for task_id, signals in (("b-task", ("enqueued", "executing", "error")),
                             ("a-task", ("enqueued",))):
        db["tasks"].insert({"task_id": task_id, "status": signals[-1]})
        db["events"].insert_all(
            {"ts": i, "task_id": task_id, "signal": s}
            for i, s in enumerate(signals))
    db.close()

    db = open_event_store(path)
    seqs = dict(db.execute("select task_id, seq from tasks").fetchall())
    assert sorted(seqs.values()) == [1, 2]
    linked = db.execute("select task_id, task_seq from events").fetchall()
    assert all(seq == seqs[task_id] for task_id, seq in linked)
    history = queries.run(db.conn, "task_history", task_id="b-task")
    assert [row["signal"] for row in history] == ["enqueued", "executing", "error"]
    indexes = {i.name for i in db["events"].indexes}
    assert "idx_events_task_seq" in indexes
    assert "idx_events_task_id_ts" not in indexes
    db.close()


@pytest.mark.parametrize("sql, index", [
    ("select * from events where task_seq = "
     "(select seq from tasks where task_id = 'x')", "idx_events_task_seq"),
    ("select * from events e where e.task_id = 'x' "
     "and e.signal in ('error', 'locked')", "idx_events_task_id_failed"),
    ("select * from tasks where task_id = 'x'", "sqlite_autoindex_tasks_1"),
])
def test_lookups_of_one_task_use_an_index(tmp_path, sql, index):
    db = open_event_store(str(tmp_path / "events.db"))
    plan = " ".join(row[-1] for row in db.execute("explain query plan " + sql))
    db.close()
    assert index in plan, plan


@pytest.mark.parametrize("sql, index", [
    ("select * from tasks where duration is not null order by duration desc "
     "limit 5", "idx_tasks_duration"),
    ("select * from tasks where task = 'x' and duration is not null "
     "order by duration desc limit 5", "idx_tasks_task_duration_finished"),
    ("select wait from tasks where task = 'x' and wait is not null "
     "and finished is not null order by wait", "idx_tasks_task_wait_finished"),
    ("select run_id, count(*) from tasks where run_id is not null group by 1",
     "idx_tasks_run_id"),
    ("select * from tasks order by finished desc limit 5", "idx_tasks_finished"),
])
def test_partial_task_indexes_serve_the_queries_that_need_them(tmp_path, sql, index):
    """m004 made these indexes partial: the queries still use them."""
    db = open_event_store(str(tmp_path / "events.db"))
    plan = " ".join(row[-1] for row in db.execute("explain query plan " + sql))
    where = db.execute("select sql from sqlite_master where name = ?",
                       (index,)).fetchone()[0]
    db.close()
    assert index in plan, plan
    if index != "idx_tasks_finished":
        assert "is not null" in where


def _plain(ts, signal, task_id, duration=None):
    """A signal as recorder.plain gives it to the writer (see writer.py)."""
    return (ts, signal, task_id, "double", 0, 0, None, duration, None, None,
            None, None, "[1]", "{}", "Worker-1", None, None)


def test_a_late_enqueue_completes_an_execution_recorded_before_it(tmp_path):
    """A producer may flush its 'enqueued' after the consumer recorded the
    run: the task keeps its final status and the execution gets its wait."""
    from hueyscope.events.writer import Store

    path = str(tmp_path / "events.db")
    consumer, producer = Store(path), Store(path)
    consumer.write([_plain(100.5, "executing", "t1"),
                    _plain(100.7, "complete", "t1", duration=0.2)],
                   None, [], 0, "consumer-run", "host-b", 2, "q")
    producer.write([_plain(100.0, "enqueued", "t1")],
                   None, [], 0, "producer-run", "host-a", 1, "q")
    assert (consumer.written, producer.written) == (2, 1)

    db = open_event_store(path)
    task = db.execute("select status, attempts, enqueued, started, wait, seq "
                      "from tasks").fetchall()
    assert task == [("complete", 1, 100.0, 100.5, 0.5, 1)]
    events = {signal: (wait, attempt) for signal, wait, attempt in db.execute(
        "select signal, wait, attempt from events")}
    # The enqueue leads to the first attempt, though recorded after it ran.
    assert events == {"executing": (0.5, 1), "complete": (None, 1),
                      "enqueued": (None, 1)}
    assert db.execute("select distinct task_seq from events").fetchall() == [(1,)]
    db.close()


def test_a_synthetic_store_links_every_event_to_its_task(tmp_path):
    """Benchmarks read synthetic stores: their events must find their tasks
    through task_seq as a recorded store's do."""
    from synthetic import build_synthetic

    path = str(tmp_path / "synthetic.db")
    build_synthetic(path, events=3000)
    with sqlite3.connect(path) as conn:
        unlinked = conn.execute(
            "select count(*) from events e where task_seq is null or not exists "
            "(select 1 from tasks t where t.seq = e.task_seq "
            "and t.task_id = e.task_id)").fetchone()[0]
        events = conn.execute("select count(*) from events").fetchone()[0]
    assert events >= 3000 and unlinked == 0


def _closed_store(path):
    """A real store, closed: its WAL folded in, no -wal or -shm beside it."""
    open_event_store(str(path)).close()
    conn = sqlite3.connect(path)
    conn.execute("pragma wal_checkpoint(truncate)")
    conn.close()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    return path


def test_checking_a_store_leaves_no_file_beside_it(tmp_path):
    path = _closed_store(tmp_path / "events.db")
    before = path.read_bytes()
    check_event_store(str(path))
    check_event_store(str(path), must_exist=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.db"]
    assert path.read_bytes() == before


def test_a_store_a_newer_hueyscope_migrated_is_refused_and_left_alone(tmp_path):
    path = _closed_store(tmp_path / "events.db")
    conn = sqlite3.connect(path)
    conn.execute("insert into _sqlite_migrations (migration_set, name, applied_at) "
                 "values ('hueyscope', 'm005_next', '2099-01-01')")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    for check in (lambda: check_event_store(str(path)),
                  lambda: check_event_store(str(path), must_exist=False),
                  lambda: open_event_store(str(path))):
        with pytest.raises(ValueError, match="written by a newer hueyscope "
                           r"\(migration m005_next is unknown"):
            check()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.db"]


def test_migrations_of_another_set_do_not_count(tmp_path):
    # sqlite-utils keeps every migration set in one table: a user's own set
    # in the same file is not a newer hueyscope.
    path = _closed_store(tmp_path / "events.db")
    conn = sqlite3.connect(path)
    conn.execute("insert into _sqlite_migrations (migration_set, name, applied_at) "
                 "values ('myapp', 'm001_mine', '2099-01-01')")
    conn.commit()
    conn.close()
    check_event_store(str(path))
    open_event_store(str(path)).close()
