"""Control of what consumers take: paused task names.

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
"""
import time

from hueyscope.queue.tables import QueueCursor

ALL = "*"  # the task name of a pause of a whole queue

# The dequeue's condition on a message of huey's task table aliased ``t``.
NOT_PAUSED = (
    "not exists (select 1 from hueyscope_paused p where p.queue = t.queue "
    "and (p.task = '*' or p.task = t.hueyscope_name))")


def _named(names):
    """The name in the messages of every task of a pause (``*`` for all)."""
    return sorted(set(names))


def paused(storage):
    """[{"task", "paused", "actor"}] of the queue of ``storage``, by name."""
    with storage.db() as curs:
        rows = QueueCursor(storage, curs).execute(
            "select task, paused, actor from hueyscope_paused where queue = ? "
            "order by task", (storage.name,)).fetchall()
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
    return _named(names)



def held_back(paused_names, pending):
    """Messages held back by the pauses ``paused_names`` of ``pending``
    ({task name: count})."""
    if ALL in paused_names:
        return sum(pending.values())
    return sum(n for name, n in pending.items() if name in paused_names)
