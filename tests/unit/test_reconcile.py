"""The queue's outbox of outcomes and the recorder that claims it.

The recorder runs in this process (``writer_process=False``) on an event
store in ``tmp_path``. An outcome the store never heard of (its events lost
with a killed process) is recorded from the outbox, once; one the store has
is only claimed. ``quiet=-1``: every row counts as quiet, whatever the clock
says between two steps.
"""
import pytest

import hueyscope
from hueyscope.events.reconcile import reconcile_settled
from hueyscope.events.recorder import recorder_for
from unit_helpers import count, make_queue, rows


@pytest.fixture
def queue(tmp_path):
    huey = make_queue(tmp_path / "queue.db")
    yield huey
    recorder = recorder_for(huey)
    if recorder is not None:  # its run ends now, not at the exit of pytest
        recorder.end_run(reason="exit")
    huey.storage.close()


def _attach(huey, tmp_path):
    recorder = hueyscope.attach(huey, events=str(tmp_path / "events.db"),
                                writer_process=False, flush_interval=0.05)
    return recorder


def _run(huey, *tasks):
    """Enqueue, dequeue and execute ``(name, args)`` tasks; their ids."""
    ids = [huey.tasks[name](*args).id for name, args in tasks]
    for _ in tasks:
        huey.execute(huey.dequeue())
    huey.storage.release_pending()
    return ids


def test_attaching_a_recorder_keeps_the_outbox(queue, tmp_path):
    assert queue.storage.record_outcomes is False
    _attach(queue, tmp_path)
    assert queue.storage.record_outcomes is True


def test_an_outcome_the_store_lost_is_recorded_from_the_outbox(queue, tmp_path):
    # Run with the outbox kept but no recorder: the store hears nothing, as
    # when a consumer is killed before its events are written.
    queue.storage.record_outcomes = True
    ids = _run(queue, ("add", (1, 2)), ("nothing", ()))
    assert count(queue, "hueyscope_settled") == 2
    recorder = _attach(queue, tmp_path)
    assert reconcile_settled(queue, recorder, quiet=-1) == 2
    assert recorder.flush()
    assert count(queue, "hueyscope_settled") == 0
    statuses = rows(tmp_path / "events.db", "select task_id, status from tasks")
    assert sorted(statuses) == sorted((i, "complete") for i in ids)
    # Claimed: a second pass records nothing again.
    assert reconcile_settled(queue, recorder, quiet=-1) == 0


def test_an_outcome_the_store_has_is_claimed_not_recorded_twice(queue, tmp_path):
    recorder = _attach(queue, tmp_path)
    _run(queue, ("add", (2, 2)))
    assert recorder.flush()
    events = rows(tmp_path / "events.db", "select count(*) from events")[0][0]
    assert count(queue, "hueyscope_settled") == 1
    assert reconcile_settled(queue, recorder, quiet=-1) == 0
    assert count(queue, "hueyscope_settled") == 0
    assert recorder.flush()
    assert rows(tmp_path / "events.db", "select count(*) from events")[0][0] == events


def test_rows_not_yet_quiet_wait(queue, tmp_path):
    recorder = _attach(queue, tmp_path)
    queue.storage.record_outcomes = True
    _run(queue, ("add", (3, 3)))
    # An hour of quiet asked: the row was written just now, whatever the clock.
    assert reconcile_settled(queue, recorder, quiet=3600) == 0
    assert count(queue, "hueyscope_settled") == 1
