"""Cancel requests in the queue: where a task is, asking its holder to stop it.

The command that cancels runs in another process than the consumer that
runs the task, maybe on another host: the request is a row of
``hueyscope_cancel`` (both engines), naming the task's lease and holder.
Consumers read the rows at a short interval
(:mod:`hueyscope.consumer.control`); a row goes once its lease is settled.
"""
import collections
import time

from hueyscope.queue.tables import QueueCursor

Request = collections.namedtuple("Request", "task_id reason lease pid host")
Found = collections.namedtuple("Found", "task_id task state lease holder")

STATES = ("pending", "scheduled", "running")


def _message(huey, data):
    try:
        return huey.serializer.deserialize(data)
    except Exception:
        return None


def find(huey):
    """Every task of ``huey``'s queue that has not run yet or runs now.

    A list of :class:`Found`: pending and scheduled messages, and leases
    (running, or taken ahead by a worker). Reads each message: for the
    command line, not for a hot path.
    """
    found = []
    storage = huey.storage
    for state, items in (("pending", storage.enqueued_items()),
                         ("scheduled", storage.scheduled_items())):
        for data in items:
            message = _message(huey, data)
            if message is not None:
                found.append(Found(message.id, message.name, state, None, None))
    if getattr(storage, "leased", False):
        with storage.db() as curs:
            rows = QueueCursor(storage, curs).execute(
                "select id, holder, data from hueyscope_lease where queue = ? "
                "order by id", (huey.name,)).fetchall()
        for lease, holder, data in rows:
            message = _message(huey, bytes(data))
            if message is not None:
                found.append(Found(message.id, message.name, "running", lease,
                                   holder))
    return found


def request(huey, found, reason):
    """Ask the holder of the running tasks ``found`` to stop them."""
    if not found:
        return
    now = time.time()
    with huey.storage.db(commit=True) as curs:
        run = QueueCursor(huey.storage, curs)
        for item in found:
            run.execute(
                "insert into hueyscope_cancel (queue, task_id, lease, holder, "
                "reason, requested) values (?, ?, ?, ?, ?, ?) on conflict "
                "(queue, task_id) do update set lease = excluded.lease, "
                "holder = excluded.holder, reason = excluded.reason, "
                "requested = excluded.requested",
                (huey.name, item.task_id, item.lease, item.holder, reason, now))


def requests(huey):
    """The cancel requests of ``huey``'s queue, with the pid and host that
    hold each task; [] (one indexed read) when there are none."""
    storage = huey.storage
    with storage.db() as curs:
        return [Request(*row) for row in QueueCursor(storage, curs).execute(
            "select c.task_id, c.reason, c.lease, h.pid, h.host from "
            "hueyscope_cancel c left join hueyscope_holder h on h.id = c.holder "
            "where c.queue = ?", (huey.name,)).fetchall()]


def forget_settled(huey):
    """Delete the requests whose lease is settled (the task stopped, or ended)."""
    storage = huey.storage
    with storage.db(commit=True) as curs:
        QueueCursor(storage, curs).execute(
            "delete from hueyscope_cancel where queue = ? and not exists "
            "(select 1 from hueyscope_lease l where l.id = hueyscope_cancel.lease)",
            (huey.name,))


def settle_killed(huey, request, exc):
    """The worker process holding ``request``'s task was killed: settle it canceled.

    Its lease goes, with the request and the task's revocation flag, and
    ``canceled`` is emitted with ``exc`` (the consumer's own record of the
    outcome the worker could not write). Returns the task, or None if the
    lease was settled already.
    """
    from hueyscope.queue.recovery import _task_or_unknown

    storage = huey.storage
    with storage.db(commit=True) as curs:
        run = QueueCursor(storage, curs)
        row = run.execute("select data from hueyscope_lease where id = ?",
                          (request.lease,)).fetchone()
        if row is None:
            return None
        run.execute("delete from hueyscope_lease where id = ?", (request.lease,))
        run.execute("delete from hueyscope_cancel where queue = ? and "
                    "task_id = ?", (huey.name, request.task_id))
    task = _task_or_unknown(huey, bytes(row[0]))
    revoke_id = getattr(task, "revoke_id", None)
    if revoke_id is not None:
        huey.delete(revoke_id)
    huey._emit("canceled", task, exc=exc)
    return task
