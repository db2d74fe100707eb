"""Runs rows: one per begin_run/end_run cycle, whatever the process does."""
import sqlite3

from huey import SqliteHuey

import hueyscope


def runs(path):
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "select id, role, stop_reason, stopped is not null from runs "
            "order by started, id").fetchall()


def test_a_run_begun_after_end_run_is_a_new_run(tmp_path):
    huey = SqliteHuey("q", filename=str(tmp_path / "queue.db"))
    recorder = hueyscope.attach(huey, events=str(tmp_path / "events.db"))
    first = recorder.begin_run("consumer", workers=2)
    assert recorder.end_run("graceful")
    second = recorder.begin_run("consumer", workers=2)
    assert recorder.end_run("interrupted")
    assert first != second
    assert runs(tmp_path / "events.db") == [
        (first, "consumer", "graceful", 1),
        (second, "consumer", "interrupted", 1),
    ]


def test_begin_run_twice_restates_the_same_run(tmp_path):
    huey = SqliteHuey("q", filename=str(tmp_path / "queue.db"))
    recorder = hueyscope.attach(huey, events=str(tmp_path / "events.db"))
    first = recorder.begin_run("producer")
    assert recorder.begin_run("consumer", workers=4) == first
    assert recorder.end_run("graceful")
    assert runs(tmp_path / "events.db") == [(first, "consumer", "graceful", 1)]


def test_events_dropped_from_a_full_buffer_are_counted_once(tmp_path, caplog):
    """A full buffer drops events: stats() and the runs row say how many, once;
    the log says so once, not once per event."""
    huey = SqliteHuey("q", filename=str(tmp_path / "queue.db"))
    # The writer thread sleeps a minute between flushes, so the buffer fills.
    recorder = hueyscope.attach(huey, events=str(tmp_path / "events.db"),
                                max_buffer=2, flush_interval=60)

    @huey.task()
    def noop(i):
        return i

    for i in range(5):
        noop(i)
    logged = [r.getMessage() for r in caplog.records
              if "not recorded" in r.getMessage()]
    assert len(logged) == 1 and "buffer full" in logged[0], logged
    assert recorder.end_run("graceful")
    assert recorder.stats()["dropped"] == 3
    with sqlite3.connect(tmp_path / "events.db") as conn:
        assert conn.execute("select count(*) from events").fetchone()[0] == 2
        assert conn.execute(
            "select events_written, events_dropped from runs").fetchall() == [(2, 3)]
