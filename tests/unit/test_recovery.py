"""Recovery of a dead holder's leases, in this process.

A dead holder is a row no live process answers to: on this host a pid above
the kernel's pid_max (no process can have it) or this process's pid with
another start time (a reused pid); elsewhere, a heartbeat older than the
lease timeout. No process is started or killed.
"""
import os
import time

import pytest

from hueyscope.queue import liveness, recovery
from unit_helpers import count, leased_queue, rows


@pytest.fixture
def queue(tmp_path):
    yield from leased_queue(tmp_path)

LEASE_TIMEOUT = 60.0


def _impossible_pid():
    with open("/proc/sys/kernel/pid_max") as f:
        return int(f.read()) + 1


def _holder(huey, host=None, pid=None, pid_start=None, heartbeat=None):
    """Insert a holder row; its id."""
    now = time.time()
    with huey.storage.db(commit=True) as curs:
        curs.execute(
            "insert into hueyscope_holder (host, hostname, pid, pid_start, "
            "run_id, started, heartbeat) values (?, ?, ?, ?, ?, ?, ?)",
            (host or liveness.host_identity(), "h", pid or _impossible_pid(),
             pid_start, "run-x", now, now if heartbeat is None else heartbeat))
        return curs.lastrowid


def _lease(huey, holder, task):
    """A lease of ``task``'s message held by ``holder``, as a dequeue writes it."""
    with huey.storage.db(commit=True) as curs:
        curs.execute(
            "insert into hueyscope_lease (queue, data, priority, holder, taken) "
            "values (?, ?, ?, ?, ?)",
            (huey.name, huey.serialize_task(task), task.priority or 0, holder,
             time.time()))


def _task(huey, *args):
    return huey.tasks["add"].s(*args)


DEAD = [
    ("pid above pid_max", {}),
    ("this pid, another start", {"pid": os.getpid(), "pid_start": -1}),
    ("silent elsewhere", {"host": "elsewhere/0/0", "pid": 1,
                          "heartbeat": time.time() - 10 * LEASE_TIMEOUT}),
]
ALIVE = [
    ("this process", {"pid": os.getpid(),
                      "pid_start": liveness.process_start(os.getpid())}),
    ("beating elsewhere", {"host": "elsewhere/0/0", "pid": 1}),
]


@pytest.mark.parametrize("why,holder", DEAD, ids=[d[0] for d in DEAD])
def test_a_dead_holders_lease_goes_back_on_the_queue(queue, why, holder):
    task = _task(queue, 2, 3)
    _lease(queue, _holder(queue, **holder), task)
    outcome = recovery.recover(queue, lease_timeout=LEASE_TIMEOUT)
    assert [e["task_id"] for e in outcome.requeued] == [task.id]
    assert (count(queue, "hueyscope_lease"), count(queue, "task")) == (0, 1)
    assert count(queue, "hueyscope_holder") == 0
    # The message is the one taken: it runs as it was enqueued.
    again = queue.dequeue()
    assert (again.id, again.args) == (task.id, (2, 3))


@pytest.mark.parametrize("why,holder", ALIVE, ids=[a[0] for a in ALIVE])
def test_a_live_holders_lease_stays(queue, why, holder):
    _lease(queue, _holder(queue, **holder), _task(queue, 1, 1))
    outcome = recovery.recover(queue, lease_timeout=LEASE_TIMEOUT)
    assert not outcome
    assert (count(queue, "hueyscope_lease"), count(queue, "task")) == (1, 0)


def test_a_dry_run_changes_nothing(queue):
    _lease(queue, _holder(queue), _task(queue, 1, 1))
    outcome = recovery.recover(queue, dry_run=True)
    assert len(outcome.requeued) == 1
    assert (count(queue, "hueyscope_lease"), count(queue, "task")) == (1, 0)


def test_a_lease_whose_result_is_stored_is_not_run_again(queue):
    task = _task(queue, 4, 4)
    _lease(queue, _holder(queue), task)
    queue.put_result(task.id, 8)  # stored before the holder died
    outcome = recovery.recover(queue)
    assert [e["task_id"] for e in outcome.settled] == [task.id]
    assert outcome.requeued == []
    assert (count(queue, "hueyscope_lease"), count(queue, "task")) == (0, 0)


class PicklesOnce:
    """A result that pickles until ``refuse`` is set, then no longer."""

    refuse = False

    def __reduce__(self):
        if PicklesOnce.refuse:
            raise TypeError("this result does not pickle twice")
        return (PicklesOnce, ())


def test_a_next_step_that_cannot_be_built_does_not_stop_recovery(queue):
    """A stored result whose pipeline step cannot be pickled again: that
    task runs again, and every other dead lease is recovered all the same."""
    stuck = _task(queue, 1, 1).then(queue.tasks["add"], 1)
    other = _task(queue, 2, 2)
    holder = _holder(queue)
    _lease(queue, holder, stuck)
    _lease(queue, holder, other)
    queue.put_result(stuck.id, PicklesOnce())
    PicklesOnce.refuse = True
    try:
        outcome = recovery.recover(queue)
    finally:
        PicklesOnce.refuse = False
    assert sorted(e["task_id"] for e in outcome.requeued) == sorted(
        [stuck.id, other.id])
    assert (outcome.settled, count(queue, "hueyscope_lease")) == ([], 0)


@pytest.mark.parametrize("before,parked", [(0, False), (2, False), (3, True)])
def test_a_task_recovered_too_often_is_parked(queue, before, parked):
    task = _task(queue, 1, 2)
    if before:
        with queue.storage.db(commit=True) as curs:
            curs.execute("insert into hueyscope_recoveries (queue, task_id, "
                         "count, updated) values (?, ?, ?, ?)",
                         (queue.name, task.id, before, time.time()))
    _lease(queue, _holder(queue), task)
    outcome = recovery.recover(queue, max_recoveries=3)
    assert (len(outcome.parked), len(outcome.requeued)) == (parked, not parked)
    assert count(queue, "task") == (0 if parked else 1)
    kinds = rows(queue.storage.filename,
                 "select task_id, kind from hueyscope_dead_letter")
    assert kinds == ([(task.id, "lost")] if parked else [])


def test_a_dead_holders_lock_is_freed_a_live_ones_is_kept(queue):
    dead, alive = _holder(queue), _holder(queue, host="elsewhere/0/0", pid=1)
    with queue.storage.db(commit=True) as curs:
        for key, holder in (("unit.lock.dead", dead), ("unit.lock.alive", alive)):
            curs.execute("insert into kv (queue, key, value) values (?, ?, ?)",
                         (queue.name, key, b"1"))
            curs.execute("insert into hueyscope_lock (queue, key, holder, "
                         "worker, taken) values (?, ?, ?, 'w', ?)",
                         (queue.name, key, holder, time.time()))
    outcome = recovery.recover(queue, lease_timeout=LEASE_TIMEOUT)
    assert [e["lock"] for e in outcome.locks] == ["dead"]  # the lock_task name
    assert rows(queue.storage.filename, "select key from kv") == [("unit.lock.alive",)]


def test_own_pids_put_back_this_processs_interrupted_work(queue):
    queue.tasks["add"](5, 5)
    queue.dequeue()
    assert not recovery.recover(queue)  # alive: nothing to do
    outcome = recovery.recover(queue, own_pids={os.getpid()})
    assert len(outcome.requeued) == 1
    assert queue.storage.holder_id() is None  # registers afresh at the next lease
    # Not a recovery of a dead process: it does not count towards parking.
    assert count(queue, "hueyscope_recoveries") == 0
