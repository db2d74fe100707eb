"""Control of what consumers take: paused task names, unique tasks,
concurrency limits.

huey's message is an opaque blob in its task table; to choose messages in
SQL, a leased queue writes each message's task name beside it, in a column
of huey's task table (``hueyscope_name``, the registry's ``module.function``)
and of ``hueyscope_lease`` (``task``). Every enqueue of a leased Huey
writes it (a message written by anything else has none, and is never held
back).

**Pause.** ``hueyscope_paused`` holds one row per paused task name of a
queue (``*``: every task of the queue). The dequeue's SQL skips the
messages of a paused name, in the transaction that leases the next one, so
they stay queued in their order and the next message not paused is
taken; a pause outlives every consumer, since it is a row of the queue.
Writing a row is all a pause does: consumers that run see it at their
next dequeue. :func:`hueyscope.queue.operations.pause` and ``resume`` are
what callers use.

**Unique tasks.** A task declared ``@huey.task(unique=True)`` (keyed by its
name and arguments) or ``unique=callable`` (keyed by what the callable
returns for the task's arguments) holds its key in ``hueyscope_unique`` from its enqueue until its
outcome: pending, scheduled, retrying or running, it holds it. An enqueue
of another task with a key held is not written: the transaction that
would write it finds the key's row (a primary key, not a read then a
write), and the enqueue returns a :class:`Deduplicated` result, the
handle of the task holding the key; the task is recorded
``deduplicated``. The row is deleted in the transaction that releases
the holder's lease for its outcome (or by recovery, when it parks or
settles a dead holder's task); a retry, a delay or a task put back on
the queue keeps it.

**Concurrency limits.** A task declared ``@huey.task(concurrency=N)`` runs
at most N at a time across every consumer of the queue; with
``concurrency_key=callable``, at most N per key the callable returns for
the task's arguments. Its messages carry their slot (``hueyscope_slot``:
the name, or name and key) and limit (``hueyscope_limit``), and so do
their leases: a running task holds its slot by its lease. The dequeue
counts the leases of a message's slot in the transaction that would lease
it and skips the message while the slot is full; it keeps its place and is
taken once a slot frees. A consumer that dies holding a slot holds it
until recovery puts its lease back. On PostgreSQL, the count is made
under an advisory lock of the slot, so two consumers never both see the
last free slot.
"""
import hashlib
import time

from huey.api import Result

from hueyscope.queue.tables import QueueCursor

ALL = "*"  # the task name of a pause of a whole queue

# The dequeue's conditions on a message of huey's task table aliased ``t``.
# Two lookups of the primary key: an OR of both costs a dequeue five times
# as much while nothing is paused.
NOT_PAUSED = (
    "not exists (select 1 from hueyscope_paused p where p.queue = t.queue "
    "and p.task = t.hueyscope_name) and not exists (select 1 from "
    "hueyscope_paused p where p.queue = t.queue and p.task = '*')")
# The leases holding the slot of message ``t``.
RUNNING = ("(select count(*) from hueyscope_lease l where l.queue = t.queue "
           "and l.slot = t.hueyscope_slot)")
SLOT_FREE = "(t.hueyscope_limit is null or %s < t.hueyscope_limit)" % RUNNING


def _named(names):
    """The name in the messages of every task of a pause (``*`` for all)."""
    return sorted(set(names))


def paused(storage):
    """[{"task", "paused", "actor"}] of the queue of ``storage``, by name."""
    with storage.db() as curs:
        return paused_in(QueueCursor(storage, curs), storage.name)


def paused_in(curs, queue):
    """:func:`paused`, read through an open cursor (a
    :class:`~hueyscope.queue.tables.QueueCursor`) for ``queue``."""
    rows = curs.execute("select task, paused, actor from hueyscope_paused "
                        "where queue = ? order by task", (queue,)).fetchall()
    return [{"task": task, "paused": when, "actor": actor}
            for task, when, actor in rows]


def pause(storage, names, actor=None):
    """Pause each task name of ``names``; returns those not paused before."""
    now, added = time.time(), []
    with storage.db(commit=True) as raw:
        curs = QueueCursor(storage, raw)
        for name in _named(names):
            curs.execute("insert into hueyscope_paused (queue, task, paused, "
                         "actor) values (?, ?, ?, ?) on conflict do nothing",
                         (storage.name, name, now, actor))
            if raw.rowcount == 1:
                added.append(name)
    return added


def resume(storage, names):
    """Resume each task name of ``names`` (every one must be paused)."""
    with storage.db(commit=True) as raw:
        curs = QueueCursor(storage, raw)
        for name in _named(names):
            curs.execute("delete from hueyscope_paused where queue = ? and "
                         "task = ?", (storage.name, name))
        storage._wake(raw)  # consumers waiting for a message look again
    return _named(names)



def held_back(paused_names, pending):
    """Messages held back by the pauses ``paused_names`` of ``pending``
    ({task name: count})."""
    if ALL in paused_names:
        return sum(pending.values())
    return sum(n for name, n in pending.items() if name in paused_names)


# -- unique tasks -------------------------------------------------------------

class Deduplicated(Result):
    """What enqueuing a unique task returns when its key is held.

    huey's result handle of the task that holds the key (``task_id``), so
    ``get()`` gives that task's result; ``key`` is the key. Nothing was
    enqueued. Test for it with ``isinstance(result, Deduplicated)``.
    """

    deduplicated = True

    def __init__(self, huey, task_id, key):
        super().__init__(huey, _Holder(task_id))
        self.task_id, self.key = task_id, key

    def __repr__(self):
        return "<Deduplicated: key %s held by task %s>" % (self.key, self.task_id)


class _Holder:
    """What huey's Result needs of a task: its id."""

    def __init__(self, task_id):
        self.id = task_id
        self.revoke_id = "r:%s" % task_id


class KeyHeld(Exception):
    """Why an enqueue was not written (the error of a ``deduplicated`` event)."""


def unique_key(task, name):
    """The unique key of ``task`` (its registry ``name``), or None.

    The key is the task's name then what tells its tasks apart: what the
    task's ``unique`` callable returns for its arguments, or
    (``unique=True``) a digest of its arguments. Made of the message alone,
    so every process that enqueues the task again (a retry, a delayed task
    now due) finds the same key.
    """
    spec = getattr(type(task), "unique", None)
    if not spec:
        return None
    args, kwargs = task.args or (), task.kwargs or {}
    if callable(spec):
        return "%s:%s" % (name, spec(*args, **kwargs))
    digest = hashlib.sha1(repr((tuple(args), sorted(kwargs.items())))
                          .encode("utf-8", "backslashreplace")).hexdigest()
    return "%s:%s" % (name, digest)


def held_keys(storage):
    """[{"key", "task_id", "since"}] of the unique keys held in the queue."""
    with storage.db() as curs:
        rows = QueueCursor(storage, curs).execute(
            "select key, task_id, since from hueyscope_unique where queue = ? "
            "order by since", (storage.name,)).fetchall()
    return [{"key": key, "task_id": task_id, "since": since}
            for key, task_id, since in rows]


# -- concurrency limits ---------------------------------------------------------

def slot_of(task_class, message):
    """(slot, limit) of ``message`` of ``task_class``; (None, None) if unlimited.

    The slot is the message's task name, and with ``concurrency_key`` the
    key it gives for the message's arguments.
    """
    limit = getattr(task_class, "concurrency", None)
    if limit is None:
        return None, None
    _check_limit(message.name, limit)
    keyed = getattr(task_class, "concurrency_key", None)
    if keyed is None:
        return message.name, limit
    return "%s:%s" % (message.name, keyed(*(message.args or ()),
                                          **(message.kwargs or {}))), limit


def check_tasks(huey):
    """Raise ValueError (one line) for a task declaring a control wrongly:
    a concurrency that is not a whole number of 1 or more, a
    concurrency_key without a concurrency or not callable, a unique that is
    neither a flag nor callable."""
    for name, cls in sorted(huey._registry._registry.items()):
        limit = getattr(cls, "concurrency", None)
        keyed = getattr(cls, "concurrency_key", None)
        unique = getattr(cls, "unique", None)
        if limit is not None:
            _check_limit(name, limit)
        if keyed is not None and (limit is None or not callable(keyed)):
            raise ValueError("task %s: concurrency_key needs a concurrency and "
                             "must be callable" % name)
        if unique is not None and not (isinstance(unique, bool) or callable(unique)):
            raise ValueError("task %s: unique=%r: give True or a callable of "
                             "the task's arguments" % (name, unique))


def _check_limit(name, limit):
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError("task %s: concurrency=%r: give a whole number of 1 "
                         "or more" % (name, limit))
