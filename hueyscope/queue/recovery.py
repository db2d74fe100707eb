"""Recovery: the work of dead consumers goes back on the queue.

A lease (see :mod:`hueyscope.queue.leases`) whose holder is dead -- on this host its
pid is gone, a zombie or another process; elsewhere its heartbeat is older
than the lease timeout -- is put back on the queue with its priority, and
recorded as a ``recovered`` event under the dead holder's run. A task
recovered more than ``max_recoveries`` times is parked in
``hueyscope_dead_letter`` instead and recorded as ``lost``: a task that kills
its worker must not crash-loop the consumers. A lease whose result is stored
is not run again; if it is a pipeline step, its next step is enqueued with
that result. Locks held by dead holders are freed; a live holder's never.

Recovery reads and writes queue.db only, never the event store. Consumers run
it at start, at every health check and at exit (their own interrupted tasks);
``hueyscope recover`` runs it by hand.

A dry run only looks: it never unpickles a message or a result (which would
run any code the pickle names, in a file it was only asked to inspect). It
reads them with :mod:`hueyscope.queue.peek` instead, and says "?" for what
that cannot tell.
"""
import dataclasses
import logging
import os
import time

from huey.utils import Error

from hueyscope.queue import liveness, peek
from hueyscope.queue.tables import LOCK_MARK, QueueCursor
from hueyscope.settings import (DEFAULT_KEEP_FAILED, DEFAULT_LEASE_TIMEOUT,
                                DEFAULT_MAX_RECOVERIES)

logger = logging.getLogger("hueyscope.recovery")

RECOVERIES_KEPT = 7 * 86400  # seconds a task's recovery count is remembered
SETTLED_KEPT = 86400  # seconds an outcome waits in the outbox for a recorder


class LeaseRecovered(Exception):
    """Why a task went back on the queue (the reason of a ``recovered`` event)."""


class PoisonTask(Exception):
    """Why a task was parked instead of requeued (the reason of a ``lost`` event)."""


@dataclasses.dataclass
class Holder:
    id: int
    host: str
    hostname: str
    pid: int
    pid_start: int
    run_id: str
    started: float
    heartbeat: float

    def death(self, now, this_host, lease_timeout):
        """Why this holder counts as dead, or None while it may be alive."""
        if self.host == this_host:
            if liveness.is_alive(self.pid, self.pid_start):
                return None
            return "pid %d on %s is gone" % (self.pid, self.hostname)
        age = now - self.heartbeat
        if age > lease_timeout:
            return "no heartbeat from pid %d on %s for %.0f s (lease timeout %.0f s)" % (
                self.pid, self.hostname, age, lease_timeout)
        return None


@dataclasses.dataclass
class Outcome:
    """What a recovery did (or, dry, would do)."""

    requeued: list = dataclasses.field(default_factory=list)
    parked: list = dataclasses.field(default_factory=list)
    settled: list = dataclasses.field(default_factory=list)
    continued: list = dataclasses.field(default_factory=list)
    locks: list = dataclasses.field(default_factory=list)
    dead: list = dataclasses.field(default_factory=list)

    def __bool__(self):
        return bool(self.requeued or self.parked or self.settled or self.locks)


def holders(curs):
    return [Holder(*row) for row in curs.execute(
        "select id, host, hostname, pid, pid_start, run_id, started, heartbeat "
        "from hueyscope_holder")]


def dead_holders(rows, lease_timeout, own=()):
    """{holder id: (Holder, reason)} of the holders that are dead.

    ``own`` are holder ids to count as dead too: a consumer putting back its
    own interrupted work as it stops.
    """
    now, this_host = time.time(), liveness.host_identity()
    dead = {}
    for h in rows:
        if h.id in own:
            dead[h.id] = (h, "interrupted when pid %d stopped" % h.pid)
            continue
        reason = h.death(now, this_host, lease_timeout)
        if reason:
            dead[h.id] = (h, reason)
    return dead


def _message(huey, data, dry_run=False):
    """(task id, task name) of a queued message, whether or not its task is known.

    ``dry_run``: read without unpickling (see :mod:`hueyscope.queue.peek`).
    """
    if dry_run:
        return peek.message_head(huey.serializer, data)
    try:
        message = huey.serializer.deserialize(data)
        return message.id, message.name
    except Exception:
        return None, None


def recover(huey, lease_timeout=DEFAULT_LEASE_TIMEOUT,
            max_recoveries=DEFAULT_MAX_RECOVERIES, dry_run=False, own_pids=(),
            keep_failed=None, actor=None):
    """Put the leases of dead holders back on ``huey``'s queue; free their locks.

    ``own_pids`` are processes of the caller's (itself, its stopped worker
    processes) whose leases go back too -- tasks interrupted as a consumer
    stops -- without counting towards ``max_recoveries``.
    ``keep_failed``: seconds the failed set keeps an entry (default 30 days).
    Returns an :class:`Outcome`; with ``dry_run`` nothing is changed and no
    event is recorded. Signals ``recovered`` and ``lost`` go to the recorder;
    ``actor``, who asked for a recovery by hand, is added to their reasons.
    """
    storage = huey.storage
    if not getattr(storage, "leased", False):
        raise ValueError("queue %s is not leased (at-most-once delivery): "
                         "nothing to recover" % huey.name)
    attempts = []

    def attempt():
        attempts.append(Outcome())
        return _recover_in_transaction(huey, attempts[-1], set(own_pids),
                                       lease_timeout, max_recoveries, dry_run,
                                       keep_failed)

    # On PostgreSQL a transaction that failed on a transient error (a
    # dropped connection, a deadlock) was rolled back: run it again, as
    # every storage call is (see pg_retries), each time with a fresh outcome.
    run_with_retries = getattr(storage, "call_with_retries", None)
    try:
        later = run_with_retries(attempt) if run_with_retries else attempt()
    except _DryRun:
        return attempts[-1]
    outcome = attempts[-1]
    if os.getpid() in own_pids:
        storage.forget_holder()
    for signal, what, extra in later:
        if actor is not None and extra.get("exc") is not None:
            from hueyscope.queue.failed import by_whom

            exc = extra["exc"]
            extra = dict(extra, exc=type(exc)(by_whom(str(exc), actor)))
        _emit(huey, signal, what, extra)
    for entry in outcome.requeued:
        logger.warning("Recovered task %s (%s) of run %s: %s", entry["task_id"],
                       entry["task"], entry["run_id"], entry["reason"])
    for entry in outcome.parked:
        logger.error("Parked task %s (%s): %s", entry["task_id"], entry["task"],
                     entry["reason"])
    for entry in outcome.locks:
        logger.warning("Freed lock %s of run %s: %s", entry["lock"],
                       entry["run_id"], entry["reason"])
    return outcome


def _recover_in_transaction(huey, outcome, own_pids, lease_timeout,
                            max_recoveries, dry_run, keep_failed=None):
    """The recovery itself, in one exclusive transaction; returns signals to emit."""
    storage = huey.storage
    later = []  # signals to emit once the transaction has committed
    now = time.time()
    this_host = liveness.host_identity()
    with storage.db(commit=True) as curs:
        curs = QueueCursor(storage, curs)
        storage.lock_for_recovery(curs)
        rows = holders(curs)
        own = {h.id for h in rows if h.host == this_host and h.pid in own_pids}
        dead = dead_holders(rows, lease_timeout, own=own)
        dead.update(_orphans(curs))
        outcome.dead = [(h, reason) for h, reason in dead.values()]
        if not dry_run:
            from hueyscope.queue.failed import forget_old

            forget_old(curs, storage, keep_failed or DEFAULT_KEEP_FAILED)
            # Outcomes no recorder reconciled within a day (none attached).
            curs.execute("delete from hueyscope_settled where ts < ?",
                         (now - SETTLED_KEPT,))
        if not dead:
            return later
        marks = ",".join("?" * len(dead))
        ids = list(dead)
        leases = curs.execute(
            "select id, data, priority, holder, unique_key, slot, slot_limit "
            "from hueyscope_lease where queue = ? and holder in (%s) "
            "order by priority desc, id" % marks, [storage.name] + ids).fetchall()
        for lease_id, data, priority, holder, unique, slot, limit in leases:
            h, reason = dead[holder]
            task_id, name = _message(huey, data, dry_run)
            entry = {"lease": lease_id, "task_id": task_id, "task": name,
                     "priority": priority, "run_id": h.run_id, "pid": h.pid,
                     "reason": reason}
            lease = _DeadLease(lease_id, data, priority, h, holder not in own)
            lease.unique, lease.slot, lease.limit = unique, slot, limit
            if not _settle_stored(huey, curs, lease, entry, outcome, later,
                                  now, dry_run):
                _requeue_or_park(curs, storage, lease, entry, outcome, later,
                                 now, max_recoveries)
            curs.execute("delete from hueyscope_lease where id = ?", (lease_id,))
        outcome.locks = _free_locks(curs, storage, dead)
        # A dead holder with nothing left (any queue of the file) is forgotten.
        curs.execute(
            "delete from hueyscope_holder where id in (%s) and id not in "
            "(select holder from hueyscope_lease) and id not in "
            "(select holder from hueyscope_lock)" % marks, ids)
        curs.execute("delete from hueyscope_recoveries where updated < ?",
                     (now - RECOVERIES_KEPT,))
        if dry_run:
            raise _DryRun()
    return later


class _DeadLease:
    """A lease of a dead holder, as recovery reads it: ``counted`` is False
    for the caller's own processes (a stop is not a crash)."""

    def __init__(self, lease_id, data, priority, holder, counted):
        self.id, self.data, self.priority = lease_id, data, priority
        self.holder, self.counted = holder, counted
        # Its unique key and concurrency slot (queue.control).
        self.unique = self.slot = self.limit = None


def _settle_stored(huey, curs, lease, entry, outcome, later, now, dry_run):
    """Settle ``lease`` if its task's result is stored: the task is not run
    again, its next pipeline step is enqueued. False if it has no result,
    or one whose next step cannot be built (the task then runs again)."""
    storage, task_id = huey.storage, entry["task_id"]
    result = _stored_result(huey, curs, task_id, dry_run)
    if result is None:
        return False
    try:
        nxt = _continuation(huey, lease.data, result[0], dry_run)
    except Exception as exc:
        # One message must not stop the recovery of every other lease.
        logger.warning("Recovery: the next step of task %s cannot be built "
                       "from its stored result (%s: %s); the task runs again.",
                       task_id, type(exc).__name__, exc)
        return False
    outcome.settled.append(entry)
    if nxt is not None:
        outcome.continued.append(dict(entry, next_id=nxt.id, next_task=nxt.name))
    if nxt is not None and nxt.data is not None:
        storage._insert_message(curs.cursor, nxt.data, nxt.priority)
        later.append(("enqueued", nxt.data, {}))
    _drop_unique(curs, storage, lease.unique, task_id)
    if storage.record_outcomes and task_id is not None:
        # Its holder died after storing the result and before the write
        # that releases the lease with its outcome row (a pipeline step's
        # next enqueue): the record learns of the completion from the
        # outbox all the same.
        curs.execute(
            "insert into hueyscope_settled (queue, task_id, task, signal, "
            "priority, run_id, ts) values (?, ?, ?, 'complete', ?, ?, ?)",
            (storage.name, task_id, entry["task"], lease.priority,
             lease.holder.run_id, now))
    return True


def _requeue_or_park(curs, storage, lease, entry, outcome, later, now,
                     max_recoveries):
    """Put ``lease``'s message back on the queue, or park it in the failed
    set as lost once it was recovered more than ``max_recoveries`` times."""
    key = entry["task_id"] or "#%d" % lease.id  # a message no one can read
    count = _recoveries(curs, storage.name, key)
    if lease.counted:
        count += 1
        curs.execute(
            "insert into hueyscope_recoveries (queue, task_id, count, "
            "updated) values (?, ?, ?, ?) on conflict (queue, task_id) "
            "do update set count = excluded.count, updated = excluded.updated",
            (storage.name, key, count, now))
    entry["recoveries"] = count
    run_id = lease.holder.run_id
    if lease.counted and count > max_recoveries:
        why = ("recovered %d times (max %d), last because %s; parked in "
               "hueyscope_dead_letter" % (count - 1, max_recoveries,
                                          entry["reason"]))
        entry["reason"] = why
        curs.execute(
            "insert into hueyscope_dead_letter (queue, task_id, task, "
            "data, priority, reason, recoveries, run_id, parked, kind) "
            "values (?, ?, ?, ?, ?, ?, ?, ?, ?, 'lost')",
            (storage.name, entry["task_id"], entry["task"], lease.data,
             lease.priority, why, count - 1, run_id, now))
        outcome.parked.append(entry)
        _drop_unique(curs, storage, lease.unique, entry["task_id"])
        later.append(("lost", lease.data, {"exc": PoisonTask(why),
                                           "run_id": run_id}))
    else:
        # Back on the queue as it was taken: named, holding its unique key,
        # with its concurrency slot.
        curs.execute("insert into {task} (queue, data, priority, "
                     "hueyscope_name, hueyscope_unique, hueyscope_slot, "
                     "hueyscope_limit) values (?, ?, ?, ?, ?, ?, ?)",
                     (storage.name, lease.data, lease.priority, entry["task"],
                      lease.unique, lease.slot, lease.limit))
        outcome.requeued.append(entry)
        later.append(("recovered", lease.data, {
            "exc": LeaseRecovered(entry["reason"]), "run_id": run_id}))


def _drop_unique(curs, storage, key, task_id):
    """A dead holder's task reached its outcome: its unique key is free."""
    if key is not None:
        curs.execute("delete from hueyscope_unique where queue = ? and key = ? "
                     "and task_id = ?", (storage.name, key, task_id))


def _orphans(curs):
    """Holders of leases or locks whose row is gone (deleted by hand): dead."""
    return {hid: (Holder(hid, "?", "?", 0, None, None, 0.0, 0.0),
                  "its holder is gone from the queue")
            for hid, in curs.execute(
                "select holder from hueyscope_lease union "
                "select holder from hueyscope_lock "
                "except select id from hueyscope_holder").fetchall()}


class _DryRun(Exception):
    """Raised inside the transaction so that storage.db() rolls it back."""


def _stored_result(huey, curs, task_id, dry_run=False):
    """(value,) if a result other than an error is stored for ``task_id``.

    ``dry_run``: (None,) for such a result, read without unpickling it.
    """
    if task_id is None:
        return None
    row = curs.execute("select value from {kv} where queue = ? and key = ?",
                       (huey.storage.name, task_id)).fetchone()
    if row is None:
        return None
    if dry_run:
        return (None,) if peek.is_error(huey.serializer, row[0]) is False \
            else None
    return success(huey, row[0])


def success(huey, stored):
    """(value,) if the stored result ``stored`` is a task's value, not an error."""
    try:
        value = huey.serializer.deserialize(stored)
    except Exception:
        return None
    return None if isinstance(value, Error) else (value,)


def _task_or_unknown(huey, data):
    """The task of a message, or what the recorder needs of one it does not know."""
    from hueyscope.signals import UnknownTask

    try:
        return huey.deserialize_task(data)
    except Exception:
        return UnknownTask(huey.serializer.deserialize(data))


class _Next:
    """A pipeline's next step, as recovery enqueues it."""

    def __init__(self, message, data):
        self.id, self.name, self.priority = message.id, message.name, message.priority
        self.data = data

    @classmethod
    def named(cls, task_id, name):
        """A step known only by its id and name (a dry run's)."""
        step = cls.__new__(cls)
        step.id, step.name, step.priority, step.data = task_id, name, None, None
        return step


def _continuation(huey, data, value, dry_run=False):
    """The next pipeline step of a stored result, with the result in its args.

    Built from the message itself, so that recovery needs no app: huey's
    ``Task.extend_data`` done on the step's message. ``dry_run``: only its
    id and name, read without unpickling (its ``data`` is None).
    """
    if dry_run:
        head = peek.next_step(huey.serializer, data)
        return None if head is None else _Next.named(*head)
    try:
        message = huey.serializer.deserialize(data)
    except Exception:
        return None
    nxt = getattr(message, "on_complete", None)
    if nxt is None:
        return None
    args, kwargs = tuple(nxt.args or ()), dict(nxt.kwargs or {})
    if value is None or value == ():
        pass
    elif isinstance(value, tuple):
        args += value
    elif isinstance(value, dict):
        for key, item in value.items():  # as huey: never over the caller's
            kwargs.setdefault(key, item)
    else:
        args += (value,)
    nxt = nxt._replace(args=args, kwargs=kwargs)
    return _Next(nxt, huey.serializer.serialize(nxt))


def _recoveries(curs, queue, key):
    row = curs.execute("select count from hueyscope_recoveries where queue = ? "
                       "and task_id = ?", (queue, key)).fetchone()
    return row[0] if row else 0


def _free_locks(curs, storage, dead, unowned=False, names=None):
    """Delete the locks held by dead holders (and, if asked, by nobody known)."""
    freed = []
    rows = curs.execute(
        "select key, holder from hueyscope_lock where queue = ?",
        (storage.name,)).fetchall()
    for key, holder in rows:
        if holder not in dead:
            continue
        h, reason = dead[holder]
        run_id = h.run_id
        name = key.split(LOCK_MARK, 1)[-1]
        if names and name not in names:
            continue
        curs.execute("delete from {kv} where queue = ? and key = ?", (storage.name, key))
        curs.execute("delete from hueyscope_lock where queue = ? and key = ?",
                     (storage.name, key))
        freed.append({"lock": name, "run_id": run_id, "reason": reason})
    if unowned:
        prefix = "%s%s" % (storage.name, LOCK_MARK)
        for key, in curs.execute(
                "select key from {kv} where queue = ? and substr(key, 1, ?) = ? "
                "and key not in (select key from hueyscope_lock where queue = ?)",
                (storage.name, len(prefix), prefix, storage.name)).fetchall():
            name = key[len(prefix):]
            if names and name not in names:
                continue
            curs.execute("delete from {kv} where queue = ? and key = ?",
                         (storage.name, key))
            freed.append({"lock": name, "run_id": None,
                          "reason": "no holder on record"})
    return freed


def free_dead_locks(huey, names=(), unowned=True, lease_timeout=DEFAULT_LEASE_TIMEOUT):
    """Free the locks of dead holders (huey's flush_locks, made safe); returns names."""
    storage = huey.storage
    names = {n.strip() for n in names if n.strip()}
    with storage.db(commit=True) as curs:
        curs = QueueCursor(storage, curs)
        storage.lock_for_recovery(curs)
        dead = dead_holders(holders(curs), lease_timeout)
        dead.update(_orphans(curs))
        freed = _free_locks(curs, storage, dead, unowned=unowned, names=names)
    return [f["lock"] for f in freed]


def _emit(huey, signal, what, extra):
    try:
        if isinstance(what, (bytes, memoryview)):
            task = _task_or_unknown(huey, bytes(what))
        else:
            task = what
    except Exception:
        return  # not even a message: queue.db has the record
    # Handlers are called as huey calls them, (signal, task[, exc]): the
    # run the event belongs to travels on the task, where the recorder
    # looks for it and any other handler never sees it.
    task.hueyscope_run_id = extra.get("run_id")
    exc = extra.get("exc")
    try:
        huey._emit(signal, task, *((exc,) if exc is not None else ()))
    except Exception:
        logger.exception("Could not record %s of %s", signal, task.id)
