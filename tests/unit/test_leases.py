"""The leased storage's bookkeeping, driven by hand in this process.

Every check reads the queue file through a connection of its own: what
another process (a recovery, ``hueyscope status``) would see.
"""
import os
import threading

import pytest

from hueyscope.queue import recovery
from unit_helpers import count, leased_queue, rows


@pytest.fixture
def queue(tmp_path):
    yield from leased_queue(tmp_path)


def test_a_dequeued_task_is_leased_not_deleted(queue):
    queue.tasks["add"](1, 2)
    task = queue.dequeue()
    assert (count(queue, "task"), count(queue, "hueyscope_lease")) == (0, 1)
    holder = rows(queue.storage.filename, "select id, pid from hueyscope_holder")
    assert holder == [(queue.storage.holder_id(), os.getpid())]
    assert queue.storage.owns(task.id)


def test_a_stored_result_releases_its_lease_in_the_same_write(queue):
    result = queue.tasks["add"](1, 2)
    queue.execute(queue.dequeue())
    assert count(queue, "hueyscope_lease") == 0
    assert result.get() == 3


@pytest.mark.parametrize("first", [0, 1, 2])
def test_several_dequeued_then_executed_each_release_their_own(queue, first):
    results = [queue.tasks["add"](i, i) for i in range(3)]
    tasks = [queue.dequeue() for _ in range(3)]
    assert count(queue, "hueyscope_lease") == 3
    order = tasks[first:] + tasks[:first]
    for done, task in enumerate(order, 1):
        queue.execute(task)
        assert count(queue, "hueyscope_lease") == 3 - done
        assert not queue.storage.owns(task.id)
    assert [r.get() for r in results] == [0, 2, 4]


def test_a_task_executed_on_another_thread_releases_the_lease_taken_here(queue):
    queue.tasks["add"](2, 3)
    task = queue.dequeue()
    errors = []

    def run():
        try:
            queue.execute(task)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(30)
    assert errors == []
    assert count(queue, "hueyscope_lease") == 0
    assert queue.storage.holder_id() is not None


def test_an_unstored_outcome_is_released_by_the_next_write(queue):
    queue.tasks["nothing"]()  # a result of None is not stored: no write
    queue.execute(queue.dequeue())
    assert count(queue, "hueyscope_lease") == 1
    queue.storage.release_pending()
    assert count(queue, "hueyscope_lease") == 0


def test_the_next_dequeue_carries_a_pending_release(queue):
    queue.tasks["nothing"]()
    queue.tasks["add"](1, 1)
    queue.execute(queue.dequeue())
    queue.dequeue()
    # One lease released, one taken, in the same transaction.
    assert count(queue, "hueyscope_lease") == 1


@pytest.mark.parametrize("executed", [0, 1, 2])
def test_settle_at_exit_puts_back_what_was_never_finished(queue, executed):
    for i in range(3):
        queue.tasks["add"](i, 1)
    tasks = [queue.dequeue() for _ in range(3)]
    for task in tasks[:executed]:
        queue.execute(task)
    assert queue.storage.settle_at_exit() == 3 - executed
    assert count(queue, "hueyscope_lease") == 0
    assert count(queue, "task") == 3 - executed
    # Nothing left to recover from this process: no holder row either.
    assert count(queue, "hueyscope_holder") == 0
    left = sorted(queue.dequeue().args for _ in range(3 - executed))
    assert left == sorted(t.args for t in tasks[executed:])


def test_settle_at_exit_writes_a_release_still_due(queue):
    queue.tasks["nothing"]()
    queue.execute(queue.dequeue())
    assert queue.storage.settle_at_exit() == 0
    assert (count(queue, "hueyscope_lease"), count(queue, "task")) == (0, 0)


def test_settle_at_exit_without_a_holder_does_nothing(queue):
    assert queue.storage.settle_at_exit() == 0
    assert count(queue, "hueyscope_holder") == 0


def test_an_outcome_that_cannot_be_written_keeps_its_lease(queue):
    task_id = queue.tasks["unpicklable"]().id
    task = queue.dequeue()
    with pytest.raises(Exception):
        queue.execute(task)
    queue.storage.release_pending()  # no release was left waiting either
    assert rows(queue.storage.filename, "select holder from hueyscope_lease") == [
        (queue.storage.holder_id(),)]
    # At exit the holder stays with it: recovery puts it back.
    queue.storage.settle_at_exit()
    assert count(queue, "hueyscope_holder") == 1
    outcome = recovery.recover(queue, own_pids={os.getpid()})
    assert [e["task_id"] for e in outcome.requeued] == [task_id]
    assert (count(queue, "hueyscope_lease"), count(queue, "task")) == (0, 1)


def test_keep_unwritten_is_false_for_a_task_not_held(queue):
    assert queue.storage.keep_unwritten("no-such-task") is False


@pytest.mark.parametrize("outcomes,expected", [
    (False, []),
    (True, [("add", "complete")]),
])
def test_releases_write_outbox_rows_only_when_asked(queue, outcomes, expected):
    queue.storage.record_outcomes = outcomes
    queue.tasks["add"](1, 2)
    queue.execute(queue.dequeue())
    assert rows(queue.storage.filename,
                "select substr(task, -3), signal from hueyscope_settled") == expected


@pytest.mark.parametrize("task,signal", [("add", "complete"), ("nothing", "complete")])
def test_an_outbox_row_is_written_by_the_releasing_transaction(queue, task, signal):
    queue.storage.record_outcomes = True
    queue.tasks[task](*((1, 1) if task == "add" else ()))
    queue.execute(queue.dequeue())
    queue.storage.release_pending()
    assert rows(queue.storage.filename, "select signal from hueyscope_settled") == [
        (signal,)]
    assert count(queue, "hueyscope_lease") == 0


@pytest.mark.parametrize("outcome", ["revoked", "expired", "canceled"])
def test_a_task_never_to_run_again_is_released_at_once_and_says_why(queue, outcome):
    """huey consumes a revocation as it acts on it: a lease left for the
    next write would, after a crash, be run again by recovery."""
    import datetime

    from huey.exceptions import CancelExecution

    @queue.task()
    def stops():
        raise CancelExecution(retry=False)

    queue.storage.record_outcomes = True
    if outcome == "revoked":
        queue.tasks["add"](1, 1).revoke()
    elif outcome == "expired":
        late = queue.tasks["add"].s(1, 1)
        late.expires = datetime.datetime(2000, 1, 1)  # long gone when it runs
        queue.enqueue(late)
    else:
        stops()
    task = queue.dequeue()
    assert queue.execute(task) is None  # not run, or stopped
    assert count(queue, "hueyscope_lease") == 0  # no further write needed
    assert rows(queue.storage.filename, "select task_id, signal from hueyscope_settled") \
        == [(task.id, outcome)]
    # A crash now leaves recovery nothing to run again.
    assert queue.storage.settle_at_exit() == 0 and count(queue, "task") == 0
