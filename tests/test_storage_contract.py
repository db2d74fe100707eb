"""Every leased storage keeps the same contract: SQLite and PostgreSQL, in-process.

Each test runs once on a SQLite file and once on a PostgreSQL schema of its
own (database ``test`` at 127.0.0.1:5432, dropped afterwards), driving the
storage through :class:`hueyscope.queue.contract.LeasedStorage` and reading
the tables of record with the same SQL (``QueueCursor``). A holder that
dies is a real process that exits holding a lease and a lock.
"""
import os
import subprocess
import sys

import pytest

from conftest import postgres_schema
from hueyscope.queue import operations, recovery
from hueyscope.queue.contract import LeasedStorage
from hueyscope.queue.tables import QueueCursor

NAME = "contract"

# A holder that takes a message and a lock, then dies holding both: os._exit
# skips the exit hook that would put them back.
DIES_HOLDING = """
import os, sys
engine, where = sys.argv[1], sys.argv[2]
if engine == "sqlite":
    from hueyscope.queue.sqlite import SqliteHuey
    huey = SqliteHuey(%(name)r, filename=where)
else:
    from hueyscope.queue.postgres import LeasedPostgresHuey
    huey = LeasedPostgresHuey(%(name)r, dsn=where, blocking=False, utc=True)
assert huey.storage.dequeue() is not None
assert huey.storage.put_if_empty(%(name)r + ".lock.child", b"1")
print(huey.storage.holder_id(), flush=True)
os._exit(0)
""" % {"name": NAME}


def _sqlite(tmp_path):
    from hueyscope.queue.sqlite import SqliteHuey

    where = str(tmp_path / "queue.db")
    yield where, lambda: SqliteHuey(NAME, filename=where)


def _postgres(tmp_path):
    from hueyscope.queue.postgres import LeasedPostgresHuey

    with postgres_schema() as (admin, schema, where):
        yield where, lambda: LeasedPostgresHuey(NAME, dsn=where, blocking=False,
                                                utc=True)


@pytest.fixture(params=["sqlite", "postgres"])
def queue(request, tmp_path):
    """(engine, where, huey): a leased queue with tasks ``add`` and ``boom``."""
    engines = {"sqlite": _sqlite, "postgres": _postgres}
    made = engines[request.param](tmp_path)
    where, build = next(made)
    huey = build()
    huey.recover_on_dequeue = False  # the tests recover when they mean to

    @huey.task()
    def add(a, b):
        return a + b

    @huey.task()
    def boom():
        raise ValueError("boom")

    huey.add, huey.boom = add, boom
    try:
        yield request.param, where, huey
    finally:
        huey.storage.close()
        made.close()


def rows(storage, sql, params=()):
    with storage.db() as curs:
        return [tuple(row) for row in
                QueueCursor(storage, curs).execute(sql, params).fetchall()]


def queued(storage):
    return rows(storage, "select priority from {task} where queue = ? "
                "order by priority desc, id", (NAME,))


def leases(storage):
    return rows(storage, "select id, holder from hueyscope_lease where queue = ?",
                (NAME,))


def listen(huey):
    """The signals ``huey`` sends from now on: [(signal, reason or None)]."""
    seen = []

    @huey.signal()
    def note(signal, task, exc=None):
        seen.append((signal, None if exc is None else str(exc)))

    return seen


def take(huey):
    """Dequeue the next message and bind it to its task, as a worker does."""
    data = huey.storage.dequeue()
    assert data is not None
    task = huey.deserialize_task(data)
    huey.storage.note_task(task)
    return task


def test_each_engine_provides_the_whole_contract(queue):
    _, _, huey = queue
    storage = huey.storage
    assert isinstance(storage, LeasedStorage)
    declared = [name for name, value in vars(LeasedStorage).items()
                if callable(value)]
    missing = [name for name in declared
               if name not in vars(storage)
               and getattr(type(storage), name) is vars(LeasedStorage)[name]]
    assert missing == []
    assert set(storage.queue_tables) == {"kv", "task", "tick"}
    assert storage.param_style in ("qmark", "pyformat")
    assert storage.leased is True


def test_a_message_is_leased_then_released_by_its_outcome(queue):
    _, _, huey = queue
    storage = huey.storage
    huey.enqueue(huey.add.s(1, 2))
    huey.enqueue(huey.add.s(3, 4))
    first = take(huey)
    assert storage.taken_seq() == 1
    assert queued(storage) == [(0,)]
    assert [holder for _, holder in leases(storage)] == [storage.holder_id()]
    assert rows(storage, "select pid from hueyscope_holder where id = ?",
                (storage.holder_id(),)) == [(os.getpid(),)]
    # The outcome's own write releases the lease, in its transaction.
    storage.release_with_next_write(first.id)
    storage.put_data(first.id, huey.serializer.serialize(3), is_result=True)
    assert leases(storage) == []
    take(huey)
    assert storage.taken_seq() == 2
    assert len(leases(storage)) == 1


def test_messages_are_taken_by_priority_then_age(queue):
    _, _, huey = queue
    for n, priority in enumerate([1, 5, 3, 5]):
        huey.enqueue(huey.add.s(n, 0, priority=priority))
    taken = [take(huey).args[0] for _ in range(4)]
    assert taken == [1, 3, 2, 0]
    assert huey.storage.dequeue() is None


def test_a_released_lease_leaves_its_outcome_in_the_outbox(queue):
    _, _, huey = queue
    storage = huey.storage
    storage.record_outcomes = True
    huey.enqueue(huey.add.s(1, 2, priority=7))
    task = take(huey)
    storage.release_with_next_write(task.id, signal="complete")
    storage.put_data(task.id, huey.serializer.serialize(3), is_result=True)
    assert leases(storage) == []
    assert rows(storage, "select task_id, task, signal, priority from "
                "hueyscope_settled where queue = ?", (NAME,)) == [
        (task.id, task.name, "complete", 7)]


def test_what_was_taken_ahead_goes_back_unstarted(queue):
    engine, _, huey = queue
    storage = huey.storage
    storage.prefetch = True  # a result's write may lease the worker's next
    huey.enqueue(huey.add.s(1, 2, priority=2))
    huey.enqueue(huey.add.s(3, 4, priority=1))
    task = take(huey)
    storage.release_with_next_write(task.id)
    storage.put_data(task.id, huey.serializer.serialize(3), is_result=True)
    # SQLite leased the next message in the result's transaction;
    # PostgreSQL takes one at a time and has nothing to put back.
    ahead = {"sqlite": 1, "postgres": 0}[engine]
    assert len(leases(storage)) == ahead
    assert storage.put_back_unstarted() == ahead
    assert leases(storage) == []
    assert queued(storage) == [(1,)]


def test_a_dead_holders_lease_and_lock_are_recovered(queue):
    engine, where, huey = queue
    storage = huey.storage
    huey.enqueue(huey.add.s(1, 2, priority=4))
    child = subprocess.Popen([sys.executable, "-c", DIES_HOLDING, engine, where],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    dead = int(out)
    assert [holder for _, holder in leases(storage)] == [dead]
    assert rows(storage, "select holder from hueyscope_lock where queue = ?",
                (NAME,)) == [(dead,)]
    # A live holder's lock is never freed.
    assert storage.put_if_empty(NAME + ".lock.mine", b"1")
    seen = listen(huey)
    done = operations.recover(huey)
    (name, outcome), = done.queues
    assert name == NAME
    assert [e["pid"] for e in outcome.requeued] == [child.pid]
    assert [lock["lock"] for lock in outcome.locks] == ["child"]
    assert leases(storage) == [] and queued(storage) == [(4,)]
    assert rows(storage, "select key, holder from hueyscope_lock where queue = ?",
                (NAME,)) == [(NAME + ".lock.mine", storage.holder_id())]
    assert rows(storage, "select id from hueyscope_holder") == [
        (storage.holder_id(),)]
    assert [s for s, _ in seen] == ["recovered"]
    assert recovery.recover(huey).requeued == []  # nothing twice


def test_a_periodic_tick_is_claimed_once(queue):
    engine, where, huey = queue
    other = huey.storage.__class__(NAME, **(
        {"filename": where} if engine == "sqlite" else {"dsn": where}))
    try:
        message = huey.serialize_task(huey.add.s(1, 1, priority=2))
        batch = [("add", message, 2), ("other", message, 0)]
        assert huey.storage.enqueue_unclaimed("2026-01-01T00:00", batch) == [0, 1]
        assert other.enqueue_unclaimed("2026-01-01T00:00", batch) == []
        assert other.enqueue_unclaimed("2026-01-01T00:01", batch[:1]) == [0]
    finally:
        other.close()
    assert queued(huey.storage) == [(2,), (2,), (0,)]


def test_a_lock_names_its_holder_and_goes_with_it(queue):
    _, _, huey = queue
    storage = huey.storage
    with huey.lock_task("report"):
        assert rows(storage, "select key, holder from hueyscope_lock "
                    "where queue = ?", (NAME,)) == [
            (NAME + ".lock.report", storage.holder_id())]
        assert not storage.put_if_empty(NAME + ".lock.report", b"1")
    assert rows(storage, "select key from hueyscope_lock") == []
    assert rows(storage, "select key from {kv} where queue = ?", (NAME,)) == []


def test_the_failed_set_parks_and_gives_back(queue):
    _, _, huey = queue
    storage = huey.storage
    huey.enqueue(huey.boom.s(priority=3))
    task = take(huey)
    try:
        raise ValueError("boom")
    except ValueError as exc:
        storage.fail_current(task, exc)
    assert leases(storage) == [] and queued(storage) == []
    entries = operations.failed(huey, kind="failed")
    assert [(e["task_id"], e["error_type"], e["reason"]) for e in entries] == [
        (task.id, "ValueError", "ValueError: boom")]
    assert entries[0]["fingerprint"]
    entry = entries[0]["id"]

    would = operations.retry(huey, ids=[entry], dry_run=True)
    assert (would.count, would.dry_run) == (1, True)
    assert queued(storage) == [] and len(operations.failed(huey)) == 1

    seen = listen(huey)
    done = operations.retry(huey, task="boom", actor="ops@example")
    assert [e["id"] for e in done.touched] == [entry]
    assert operations.failed(huey) == [] and queued(storage) == [(3,)]
    assert seen == [("requeued", "retried from the failed set (failed, entry "
                                 "%d), asked by ops@example" % entry)]


def test_operations_refuse_bad_input_with_one_line(queue):
    _, _, huey = queue
    for call, message in [
            (lambda: operations.retry(huey), "name the entries"),
            (lambda: operations.discard(huey, ids=[4242]),
             "no failed-set entry 4242"),
            (lambda: operations.failed(huey, kind="gone"), "no kind 'gone'"),
            (lambda: operations.revoke(huey), "give task IDS or --task NAME"),
            (lambda: operations.restore(huey, task="nope"), "no task 'nope'")]:
        with pytest.raises(ValueError) as raised:
            call()
        assert message in str(raised.value)
        assert "\n" not in str(raised.value)


def test_revoke_and_restore_say_what_they_did(queue):
    _, _, huey = queue
    seen = listen(huey)
    done = operations.revoke(huey, task="add", actor="ops@example")
    name = huey._registry.task_to_string(huey.add.task_class)
    assert (done.action, done.touched) == ("revoke", [
        {"task_id": None, "task": name}])
    assert huey.add.is_revoked()
    operations.restore(huey, ids=["abc"])
    assert seen == [("revoke", "revoke by hand (every task of the name), "
                               "asked by ops@example"),
                    ("restore", "restore by hand (this task)")]


# -- pause and resume (hueyscope.queue.control) -------------------------------

def test_a_paused_name_stays_queued_in_order_and_resumes(queue):
    _, _, huey = queue
    storage = huey.storage
    for n in range(3):
        huey.enqueue(huey.add.s(n, 0))
        huey.enqueue(huey.boom.s())
    seen = listen(huey)
    done = operations.pause(huey, ["add"], actor="ops@example")
    name = huey._registry.task_to_string(huey.add.task_class)
    assert done.touched == [{"task_id": None, "task": name}]
    assert [p["task"] for p in operations.paused(huey)] == [name]
    # Only boom is taken; the adds keep their place.
    assert [take(huey).name for _ in range(3)] == ["boom"] * 3
    assert storage.dequeue() is None
    status = operations.status(huey)[NAME]
    assert [(p["task"], p["held_back"]) for p in status["paused"]] == [(name, 3)]
    # A second pause changes nothing; a pause of the whole queue holds all.
    assert operations.pause(huey, ["add"]).touched == []
    operations.pause(huey, every=True)
    operations.resume(huey, ["add"])
    assert storage.dequeue() is None
    operations.resume(huey, every=True)
    assert [take(huey).args[0] for _ in range(3)] == [0, 1, 2]
    assert [s for s, _ in seen] == ["pause", "pause", "resume", "resume"]
    assert seen[0][1] == "pause by hand (every task of the name), asked by ops@example"


def test_a_paused_message_put_back_by_recovery_stays_paused(queue):
    _, _, huey = queue
    huey.enqueue(huey.add.s(1, 1))
    take(huey)
    operations.pause(huey, ["add"])
    # This process stops with the lease: it goes back on the queue, named.
    assert recovery.recover(huey, own_pids=[os.getpid()]).requeued
    assert huey.storage.dequeue() is None
    assert operations.status(huey)[NAME]["paused"][0]["held_back"] == 1
    operations.resume(huey, ["add"])
    assert take(huey).args == (1, 1)


def test_pause_and_resume_refuse_bad_input_and_change_nothing(queue):
    _, _, huey = queue
    operations.pause(huey, ["boom"])
    for call, message in [
            (lambda: operations.pause(huey), "give --task NAME or --all"),
            (lambda: operations.pause(huey, ["add"], every=True), "not both"),
            (lambda: operations.pause(huey, ["nope"]), "no task 'nope'"),
            (lambda: operations.resume(huey, ["add", "boom"]),
             "not paused in queue contract"),
            (lambda: operations.resume(huey, every=True), "the queue not paused")]:
        with pytest.raises(ValueError) as raised:
            call()
        assert message in str(raised.value)
        assert "\n" not in str(raised.value)
    assert [p["task"].rsplit(".", 1)[-1] for p in operations.paused(huey)] == ["boom"]
    dry = operations.resume(huey, ["boom"], dry_run=True)
    assert dry.dry_run and dry.count == 1 and operations.paused(huey)


# -- unique tasks (hueyscope.queue.control) -----------------------------------

def unique_tasks(huey):
    """Tasks ``once`` (keyed by its arguments) and ``flaky`` (keyed by n % 2,
    one retry) on ``huey``."""
    @huey.task(unique=True)
    def once(n):
        return n

    @huey.task(unique=lambda n, fail=False: n % 2, retries=1)
    def flaky(n, fail=False):
        if fail:
            raise ValueError("flaky")
        return n

    return once, flaky


def held(huey):
    from hueyscope.queue import control

    return [(k["key"].rsplit(":", 1)[-1], k["task_id"])
            for k in control.held_keys(huey.storage)]


def run_next(huey):
    """Take the next task and run it as a worker does; returns it."""
    task = huey.dequeue()
    assert task is not None
    huey.execute(task)
    huey.storage.release_pending()
    return task


def test_a_unique_key_is_held_until_the_outcome(queue):
    import hueyscope

    _, _, huey = queue
    once, flaky = unique_tasks(huey)
    first = once(1)
    seen = listen(huey)
    again = once(1)
    assert isinstance(again, hueyscope.Deduplicated)
    assert (again.task_id, again.key.rsplit(":", 1)[0]) == (
        first.id, huey._registry.task_to_string(once.task_class))
    assert seen == [("deduplicated", "unique key %s is held by task %s" % (
        again.key, first.id))]
    assert not isinstance(once(2), hueyscope.Deduplicated)
    assert len(queued(huey.storage)) == 2
    assert operations.status(huey)[NAME]["unique_keys"] == 2
    # Running, it still holds the key; its outcome frees it.
    task = huey.dequeue()
    assert isinstance(once(1), hueyscope.Deduplicated)
    huey.execute(task)
    huey.storage.release_pending()
    assert again.get() == 1  # the holder's result
    assert not isinstance(once(1), hueyscope.Deduplicated)
    # A retry keeps the key; the failure for good frees it.
    while huey.storage.dequeue() is not None:
        pass
    huey.storage.release_pending()
    huey.storage.flush_all()
    failing = flaky(1, fail=True)
    run_next(huey)  # fails, and is enqueued again to retry
    assert held(huey) == [("1", failing.id)]
    assert isinstance(flaky(3), hueyscope.Deduplicated)
    run_next(huey)  # fails for good: the failed set
    assert held(huey) == []
    assert not isinstance(flaky(3), hueyscope.Deduplicated)


def test_a_dead_holders_unique_key_stays_until_its_task_is_parked(queue):
    import hueyscope

    engine, where, huey = queue
    once, _ = unique_tasks(huey)
    task_id = once(7).id

    def dies_holding():
        child = subprocess.run([sys.executable, "-c", DIES_HOLDING, engine,
                                where], capture_output=True, text=True, timeout=60)
        assert child.returncode == 0, child.stderr

    dies_holding()
    assert recovery.recover(huey).requeued  # back on the queue: still held
    assert held(huey) == [("%s" % held(huey)[0][0], task_id)]
    assert isinstance(once(7), hueyscope.Deduplicated)
    dies_holding()
    assert recovery.recover(huey, max_recoveries=1).parked  # lost: freed
    assert held(huey) == []
    assert not isinstance(once(7), hueyscope.Deduplicated)


# -- concurrency limits (hueyscope.queue.control) ------------------------------

def limited_tasks(huey):
    """``capped`` (2 at a time) and ``per_user`` (1 at a time per user)."""
    @huey.task(concurrency=2)
    def capped(n):
        return n

    @huey.task(concurrency=1, concurrency_key=lambda user, n: user)
    def per_user(user, n):
        return n

    return capped, per_user


def test_a_concurrency_limit_is_held_by_leases_and_keeps_the_order(queue):
    _, _, huey = queue
    capped, per_user = limited_tasks(huey)
    for n in range(4):
        capped(n)
    huey.add(9, 0)
    first, second, third = huey.dequeue(), huey.dequeue(), huey.dequeue()
    assert [(t.name, t.args[0]) for t in (first, second, third)] == [
        ("capped", 0), ("capped", 1), ("add", 9)]
    assert huey.dequeue() is None  # capped 2 and 3 wait, in their place
    huey.execute(first)
    huey.storage.release_pending()
    assert huey.dequeue().args == (2,)
    assert huey.dequeue() is None
    name = huey._registry.task_to_string(capped.task_class)
    assert operations.status(huey)[NAME]["slots"] == [
        {"slot": name, "running": 2, "limit": 2, "waiting": 1}]
    # A key of the arguments: one per user.
    for user, n in [("a", 1), ("a", 2), ("b", 3)]:
        per_user(user, n)
    assert [huey.dequeue().args for _ in range(2)] == [("a", 1), ("b", 3)]
    assert huey.dequeue() is None


# PostgreSQL takes one message per transaction: SQLite alone takes for many.
@pytest.mark.parametrize("queue", ["sqlite"], indirect=True)
def test_one_transaction_taking_for_many_workers_keeps_the_limit(queue):
    engine, _, huey = queue
    capped, _ = limited_tasks(huey)
    for n in range(4):
        capped(n)
    huey.add(9, 0)
    huey.storage._waiting = 4  # four workers waiting: one transaction for all
    huey.storage.dequeue()
    assert rows(huey.storage, "select slot, count(*) from hueyscope_lease "
                "group by slot order by slot") == [
        (None, 1), (huey._registry.task_to_string(capped.task_class), 2)]


def test_a_dead_holders_slot_is_freed_by_recovery(queue):
    engine, where, huey = queue
    capped, _ = limited_tasks(huey)
    capped.task_class.concurrency = 1
    capped(1)
    capped(2)
    child = subprocess.run([sys.executable, "-c", DIES_HOLDING, engine, where],
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    # capped 1 is held by the dead holder: capped 2 waits for the slot.
    assert huey.dequeue() is None
    assert recovery.recover(huey).requeued  # capped 1, back behind capped 2
    assert huey.dequeue().args == (2,)  # the freed slot
    assert huey.dequeue() is None


def test_a_bad_limit_is_refused_at_enqueue_and_nothing_is_written(queue):
    from hueyscope.queue import control

    _, _, huey = queue

    @huey.task(concurrency=0)
    def never(n):
        return n

    with pytest.raises(ValueError) as raised:
        never(1)
    assert "concurrency=0: give a whole number of 1 or more" in str(raised.value)
    assert queued(huey.storage) == []
    with pytest.raises(ValueError):
        control.check_tasks(huey)
