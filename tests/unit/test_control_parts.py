"""The parts of task control that need no consumer: notes, redaction, the board."""
import logging
import types

import pytest

from hueyscope import control
from hueyscope.consumer.control import CancelBoard, _exception
from hueyscope.events import task_notes
from hueyscope.events.task_logs import TaskLogHandler
from hueyscope.redaction import Redaction


def test_notes_ride_with_queue_samples_and_are_split_out():
    sample = (1.0, "q", 1, 0, 2, "run")
    progress = task_notes.progress_note(2.0, "t1", "job", 0.5, "half", "run")
    log = task_notes.log_note(3.0, "t1", "job", "INFO", 20, "app", "hello",
                              "run", 42, "Worker-1")
    samples, progresses, logs = task_notes.split([sample, progress, log])
    assert samples == [sample]
    assert progresses == [(2.0, "t1", "job", 0.5, "half", "run")]
    # The attempt is counted in SQL from the task id and time given twice.
    assert logs == [(3.0, "t1", "job", "t1", 3.0, "INFO", 20, "app", "hello",
                     "run", 42, "Worker-1")]
    only = [sample]
    assert task_notes.split(only) == (only, [], [])


def record(msg, args=()):
    return logging.LogRecord("app", logging.INFO, __file__, 1, msg, args, None)


@pytest.mark.parametrize("msg,args,expected", [
    ("login password=hunter2 ok", (), "login password=*** ok"),
    ("Token: abc.def, next", (), "Token: ***, next"),
    ("with %(password)s", ({"password": "s3cret"},), "with ***"),
    ("nested %s", ({"api_key": "k", "user": "u"},),
     "nested {'api_key': '***', 'user': 'u'}"),
    ("nothing secret here", (), "nothing secret here"),
])
def test_log_lines_are_redacted_like_arguments(msg, args, expected):
    handler = TaskLogHandler()
    assert handler._redacted_message(record(msg, args), Redaction()) == expected


def test_the_board_keeps_the_newest_requests_within_its_size():
    board = CancelBoard(size=200)
    for i in range(20):
        board.post("task-%d" % i, "canceled by hand")
    assert board.reason("task-19") == "canceled by hand"
    assert board.reason("task-0") is None
    assert board.reason("unknown") is None


def test_a_raised_exception_carries_its_message_and_pickles_as_its_base():
    import pickle

    exc = _exception(control.TaskCanceled, "canceled, asked by me")()
    assert str(exc) == "canceled, asked by me" and exc.retry is False
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is control.TaskCanceled and str(again) == str(exc)


def test_progress_is_throttled_and_the_last_value_kept(monkeypatch):
    written = []
    monkeypatch.setattr(control, "PROGRESS_EVERY", 3600.0)
    monkeypatch.setattr(control, "_record_progress",
                        lambda running, ts, f, m: written.append((f, m)))
    task = types.SimpleNamespace(id="t1")
    running = control.begin(task)
    try:
        control.progress(0.1, "first")  # written: none before it
        control.progress(0.2, "second")  # throttled
        control.progress(7, "clamped")  # throttled, clamped to 1.0: written
        control.progress(0.3, "third")  # throttled
        assert written == [(0.1, "first"), (1.0, "clamped")]
        control.flush_progress(running)
        assert written[-1] == (0.3, "third")
    finally:
        control.end(running)
    control.progress(0.5)  # outside a task: nothing
    assert len(written) == 3 and not control.cancelled()


def test_notes_are_taken_out_of_a_batch_in_order():
    signal = (1.0, "executing")
    note = task_notes.progress_note(2.0, "t1", "job", 0.5, None, "run")
    later = (3.0, "complete")
    assert task_notes.take_notes([signal, note, later]) == (
        [signal, later], [note])
    batch = [signal, later]
    assert task_notes.take_notes(batch) == (batch, [])


def test_concurrency_slots_count_leases_running_and_messages_waiting(tmp_path):
    from hueyscope.queue.sqlite import SqliteHuey
    from hueyscope.queue.tables import QueueCursor
    from hueyscope.queue.view import concurrency_slots, sqlite_status

    huey = SqliteHuey("slots", filename=str(tmp_path / "queue.db"))
    huey.recover_on_dequeue = False

    @huey.task(concurrency=2)
    def capped(n):
        return n

    try:
        for n in range(3):
            capped(n)
        # Two taken (their leases hold the slot); the third waits for one.
        assert huey.dequeue() is not None and huey.dequeue() is not None
        assert huey.dequeue() is None
        [slot] = sqlite_status(str(tmp_path / "queue.db"))["slots"]["slots"]
        assert slot["slot"].endswith("capped")
        assert (slot["running"], slot["limit"], slot["waiting"]) == (2, 2, 1)
        # One queue's, through the storage, as the console reads them.
        with huey.storage.db() as curs:
            cursor = QueueCursor(huey.storage, curs)
            assert concurrency_slots(cursor, "{task}", "slots") == [("slots", slot)]
            assert concurrency_slots(cursor, "{task}", "other") == []
    finally:
        huey.storage.close()
