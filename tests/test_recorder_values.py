"""Values no database takes as they are: recorded in a safe form, one row at most lost.

A task's arguments and errors are whatever the user's code made them: an
argument whose ``__repr__`` raises (huey's own test_stats case), an
exception whose ``__str__`` raises, a lone surrogate (a file name that is not
UTF-8, as ``os.listdir`` returns it; what ``json.loads('"\\ud800"')``
returns) -- text SQLite refuses. None of them may cost the other events of
its batch, the run's row or a flush, nor keep a failed task out of the
failed set. Real parts: SQLite files, the recorder's writer process, and
``hueyscope consume`` on a small app written into the test's folder.
"""
import decimal
import json
import logging
import os
import signal
import subprocess
import sys

import pytest

import recorder_helpers as rh
from conftest import cli_env, query, scalar, wait_until

# A file name that is not UTF-8, as Python hands it over (os.listdir,
# sys.argv): its byte 0xe9 becomes the lone surrogate U+DCE9.
FILE_NAME = os.fsdecode(b"caf\xe9.txt")
# A lone surrogate a JSON body can hold.
LONE = json.loads('"\\ud800"')
# How each is stored: the surrogate escaped (Python's backslashreplace).
FILE_NAME_STORED = "caf\\udce9.txt"


class Unrepresentable:
    """An argument whose repr raises (huey's test_stats "unrepresentable args")."""

    def __repr__(self):
        raise ValueError("no repr for this one")


class Unprintable(Exception):
    """An error whose message cannot be had."""

    def __str__(self):
        raise RuntimeError("no str for this one")


PLACEHOLDER = "<unrepresentable Unrepresentable: ValueError: no repr for this one>"


def run_row(events, run_id):
    return query(events, "select events_written, events_dropped from runs "
                 "where id = ?", (run_id,))[0]


@pytest.mark.timeout(60)
def test_unrepresentable_args_are_recorded_with_a_placeholder(tmp_path):
    events = tmp_path / "events.db"
    huey, recorder, tasks = rh.build(tmp_path / "queue.db", events)
    ids = [tasks.ok(Unrepresentable()).id for _ in range(3)]
    ids += [tasks.ok(x=Unrepresentable()).id for _ in range(3)]
    assert recorder.end_run(timeout=10)
    rows = query(events, "select task_id, args, kwargs from events "
                 "where signal = 'enqueued' order by id")
    assert [r[0] for r in rows] == ids
    assert [json.loads(r[1]) for r in rows] == [[PLACEHOLDER]] * 3 + [[]] * 3
    assert [json.loads(r[2]) for r in rows] == [{}] * 3 + [{"x": PLACEHOLDER}] * 3
    assert recorder.stats()["dropped"] == 0
    assert run_row(events, recorder.run_id) == (6, 0)


@pytest.mark.timeout(60)
def test_an_error_whose_str_raises_is_recorded_with_a_placeholder(tmp_path):
    events = tmp_path / "events.db"
    huey, recorder, tasks = rh.build(tmp_path / "queue.db", events)

    @huey.task()
    def unprintable():
        raise Unprintable()

    call = unprintable()
    tasks.ok(1)
    rh.run_queue(huey)
    assert recorder.end_run(timeout=10)
    assert query(events, "select error_type, error from tasks where task_id = ?",
                 (call.id,)) == [("Unprintable", "<unrepresentable Unprintable: "
                                  "RuntimeError: no str for this one>")]
    assert scalar(events, "select count(*) from events") == 6
    assert run_row(events, recorder.run_id) == (6, 0)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("capture_args", [True, False], ids=["args", "no-args"])
def test_lone_surrogates_are_stored_escaped_in_every_column(tmp_path,
                                                            capture_args):
    """One batch: 126 plain tasks and one whose argument and error message
    hold lone surrogates, recorded by a run whose app path holds one too."""
    events, queue = tmp_path / "events.db", tmp_path / "queue.db"
    # One flush, so every event shares the batch of the bad ones.
    huey, recorder, tasks = rh.build(queue, events, capture_args=capture_args,
                                     flush_interval=60)
    app = os.fsdecode(b"app\xff.py") + ":huey"
    recorder.begin_run(role="consumer", app=app)

    @huey.task()
    def open_file(path, mode=None):
        raise OSError("cannot open %s" % path)

    for i in range(126):
        tasks.ok(i)
    bad = open_file(FILE_NAME, mode=LONE)
    rh.run_queue(huey)
    assert recorder.end_run(timeout=10)

    signals = dict(query(events, "select signal, count(*) from events "
                         "group by signal"))
    assert signals == {"enqueued": 127, "executing": 127, "complete": 126,
                       "error": 1}
    assert run_row(events, recorder.run_id) == (381, 0)
    assert recorder.stats()["dropped"] == 0
    assert scalar(events, "select app from runs where id = ?",
                  (recorder.run_id,)) == "app\\udcff.py:huey"
    error, tb, args, kwargs = query(
        events, "select error, traceback, args, kwargs from events "
        "where task_id = ? and signal = 'error'", (bad.id,))[0]
    assert error == "cannot open " + FILE_NAME_STORED
    assert tb.endswith("OSError: cannot open %s\n" % FILE_NAME_STORED)
    if capture_args:
        # The escape is JSON's own: the stored JSON decodes to the original.
        assert json.loads(args) == [FILE_NAME]
        assert json.loads(kwargs) == {"mode": LONE}
    else:
        assert (args, kwargs) == (None, None)
    assert query(events, "select status, error from tasks where task_id = ?",
                 (bad.id,)) == [("failed", "cannot open " + FILE_NAME_STORED)]
    assert dict(query(events, "select status, count(*) from tasks "
                      "group by status")) == {"complete": 126, "failed": 1}
    # The failed set keeps it, its message escaped the same way.
    assert query(queue, "select task_id, reason from hueyscope_dead_letter") \
        == [(bad.id, "OSError: cannot open " + FILE_NAME_STORED)]


@pytest.mark.timeout(60)
def test_priorities_the_queue_refuses_are_recorded(tmp_path):
    """Priorities SQLite cannot bind, or pickle cannot take: huey's enqueue
    raises, and the recorder still records each call (enqueued, then
    not-queued with the error) with the rest of its batch."""
    events = tmp_path / "events.db"
    huey, recorder, tasks = rh.build(tmp_path / "queue.db", events,
                                     flush_interval=60)
    odd = (decimal.Decimal(5), lambda: 5, 1 << 70)
    for priority in odd:
        with pytest.raises(Exception):
            huey.enqueue(tasks.ok.s(1, priority=priority))
    tasks.ok(2)
    assert recorder.end_run(timeout=10)
    rows = query(events, "select signal, priority, error_type from events "
                 "order by id")
    assert [r[0] for r in rows] == ["enqueued", "not-queued"] * 3 + ["enqueued"]
    # The lambda's is pickle's error for a local object (its type varies).
    assert [r[2] for r in rows[1:6:2]] == [
        "ProgrammingError", rows[3][2], "OverflowError"] and rows[3][2]
    assert rows[0][1] == "Decimal('5')" and "lambda" in rows[2][1]
    assert rows[4][1] == float(1 << 70)  # stored as text, read as a number
    assert run_row(events, recorder.run_id) == (7, 0)


@pytest.mark.timeout(60)
def test_a_row_the_store_refuses_costs_only_itself(tmp_path, caplog):
    """A signal the writer has no row for (none huey emits today) in the
    middle of a batch: the batch is written in parts, that one event is
    counted as dropped and logged, the 127 others are written."""
    events = tmp_path / "events.db"
    huey, recorder, tasks = rh.build(tmp_path / "queue.db", events,
                                     flush_interval=60, give_up_after=2)
    caplog.set_level(logging.ERROR, logger="hueyscope.recorder")
    before = [tasks.ok(i).id for i in range(64)]
    odd = tasks.ok.s(64)
    huey._emit("made-up", odd)
    after = [tasks.ok(65 + i).id for i in range(63)]
    assert recorder.end_run(timeout=30)
    assert [r[0] for r in query(events, "select task_id from events "
                                "order by id")] == before + after
    assert run_row(events, recorder.run_id) == (127, 1)
    assert recorder.stats() == {"written": 127, "dropped": 1, "pending": 0}
    logged = [r.getMessage() for r in caplog.records
              if "not recorded" in r.getMessage()]
    assert len(logged) == 1 and "'made-up' event of task %r" % odd.id \
        in logged[0], logged


@pytest.mark.timeout(60)
def test_a_signal_no_row_can_be_made_of_costs_only_itself(tmp_path, caplog):
    """A task whose eta is no time: its signal is counted as dropped and
    logged; the other events of the batch are written."""
    events = tmp_path / "events.db"
    huey, recorder, tasks = rh.build(tmp_path / "queue.db", events,
                                     flush_interval=60)
    caplog.set_level(logging.ERROR, logger="hueyscope.recorder")
    ids = [tasks.ok(i).id for i in range(3)]
    odd = tasks.ok.s(3)
    odd.eta = "soon"
    huey._emit("scheduled", odd)
    ids += [tasks.ok(4 + i).id for i in range(3)]
    assert recorder.end_run(timeout=10)
    assert [r[0] for r in query(events, "select task_id from events "
                                "order by id")] == ids
    assert run_row(events, recorder.run_id) == (6, 1)
    assert recorder.stats()["dropped"] == 1
    assert any("cannot record a 'scheduled' signal" in r.getMessage()
               for r in caplog.records), caplog.text


VALUES_APP = r'''
"""Tasks whose arguments and errors hold text no database takes as it is."""
import json
import os

import hueyscope
from hueyscope.queue import make_huey
from hueyscope.settings import Settings

huey = make_huey(Settings.build(), name="values")
hueyscope.attach(huey)

FILE_NAME = os.fsdecode(b"caf\xe9.txt")
LONE = json.loads('"\\ud800"')


@huey.task()
def size(value):
    return len(value)


@huey.task()
def open_file(path):
    raise OSError("cannot open %s" % path)


def produce(n):
    """Enqueue n plain tasks and the two odd ones; print their ids as JSON."""
    plain = [size("x" * i).id for i in range(n)]
    lone = size(LONE).id
    failing = open_file(FILE_NAME).id
    print(json.dumps({"plain": plain, "lone": lone, "failing": failing}))
'''


@pytest.mark.timeout(150)
@pytest.mark.parametrize("no_args", [False, True], ids=["args", "no-args"])
def test_lone_surrogates_through_a_real_consumer(cli, no_args):
    """A producer and ``hueyscope consume`` on an app whose tasks take and
    raise lone surrogates: every event recorded, nothing dropped, and the
    failed task kept in the failed set with its message."""
    (cli.folder / "values_app.py").write_text(VALUES_APP)
    extra = {"PYTHONPATH": cli.folder, "HUEYSCOPE_NO_ARGS": int(no_args)}
    env = cli_env(cli.folder, **extra)
    produced = subprocess.run(
        [sys.executable, "-c", "import values_app; values_app.produce(40)"],
        cwd=cli.folder, env=env, capture_output=True, text=True, timeout=60)
    assert produced.returncode == 0, produced.stderr
    ids = json.loads(produced.stdout)
    assert "not recorded" not in produced.stderr, produced.stderr
    options = ["--no-args"] if no_args else []
    consumer = cli.start("consume", "--app", "values_app:huey", "--workers",
                         "2", "--no-periodic", "--max-delay", "0.2", *options,
                         name="consumer", **extra)
    try:
        wait_until(lambda: scalar(cli.events, "select count(*) from tasks "
                                  "where status in ('complete', 'failed')")
                   == 42 or consumer.proc.poll() is not None, timeout=45,
                   message="every task recorded at its final status")
        assert consumer.proc.poll() is None, consumer.describe()
        assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()
    finally:
        consumer.kill()
    assert "Could not keep failed task" not in consumer.stderr, consumer.stderr
    assert "not recorded" not in consumer.stderr, consumer.stderr

    assert dict(query(cli.events, "select signal, count(*) from events "
                      "group by signal")) == {
        "enqueued": 42, "executing": 42, "complete": 41, "error": 1}
    runs = query(cli.events, "select role, events_written, events_dropped "
                 "from runs order by started")
    assert runs == [("producer", 42, 0), ("consumer", 84, 0)]
    error, args = query(cli.events, "select error, args from events where "
                        "task_id = ? and signal = 'error'", (ids["failing"],))[0]
    assert error == "cannot open " + FILE_NAME_STORED
    lone_args = {a for a, in query(cli.events, "select args from events "
                                   "where task_id = ? and signal in "
                                   "('enqueued', 'executing')", (ids["lone"],))}
    if no_args:
        assert (args, lone_args) == (None, {None})
    else:
        assert json.loads(args) == [FILE_NAME]
        assert [json.loads(a) for a in lone_args] == [[LONE]]
    # Kept in the failed set, its message escaped as in the event store.
    assert query(cli.queue, "select task_id, kind, reason from "
                 "hueyscope_dead_letter") == [
        (ids["failing"], "failed", "OSError: cannot open " + FILE_NAME_STORED)]
    listed = cli.run("failed", "--app", "values_app:huey", **extra)
    assert listed.returncode == 0, listed.stderr
    assert "%s  OSError: cannot open %s" % (
        ids["failing"][:8], FILE_NAME_STORED) in listed.stdout, listed.stdout
    # ...and in the same group of failures as in the report.
    assert scalar(cli.queue, "select fingerprint from hueyscope_dead_letter") \
        == scalar(cli.events, "select fingerprint from tasks where task_id = ?",
                  (ids["failing"],))
