"""The failed set: tasks that will not run again unless someone says so.

On a leased queue (SQLite or PostgreSQL) ``hueyscope_dead_letter`` keeps the
original message of every task that

- failed for good (kind ``failed``: its retries used up, or none),
- was parked after killing its consumer too often (kind ``lost``),
- reached a consumer that does not have its task (kind ``dropped``),

with the reason, the error type and the error's fingerprint (the event
store's, so a group of failures in the report is a group here too). The
reason quotes the error redacted as the event store's is
(:mod:`hueyscope.redaction`), when written and again when listed; the
message itself is kept whole, as huey needs it to run the task again.

``hueyscope failed`` lists it; ``hueyscope retry`` puts messages back on the
queue -- a new attempt series, with the task's declared retries, recorded as
a ``requeued`` event -- and ``hueyscope discard`` deletes them. Consumers
delete entries older than ``--keep-failed`` (30 days) at every health check.
"""
import time

from hueyscope.queue.tables import QueueCursor
KINDS = ("failed", "lost", "dropped")
COLUMNS = ("id", "queue", "task_id", "task", "kind", "error_type",
           "fingerprint", "reason", "recoveries", "run_id", "parked")


def _kind_sql():
    # Entries written before the table had a kind: lost ones say so.
    return ("coalesce(kind, case when substr(reason, 1, 10) = 'recovered ' "
            "then 'lost' else 'dropped' end)")


def select(huey, ids=(), task=None, fingerprint=None, since=None, kind=None,
           with_data=False):
    """Entries of ``huey``'s queue matching every filter given, oldest first."""
    where, params = ["queue = ?"], [huey.storage.name]
    if ids:
        where.append("id in (%s)" % ",".join("?" * len(ids)))
        params.extend(ids)
    if task:
        # A task is named as huey names it ("module.function") or by its
        # function alone, as the report shows it.
        where.append("(task = ? or task like ?)")
        params.extend([task, "%." + task])
    if fingerprint:
        where.append("fingerprint = ?")
        params.append(fingerprint)
    if since is not None:
        where.append("parked >= ?")
        params.append(time.time() - since)
    if kind:
        where.append(_kind_sql() + " = ?")
        params.append(kind)
    columns = ["id", "queue", "task_id", "task", _kind_sql(), "error_type",
               "fingerprint", "reason", "recoveries", "run_id", "parked"]
    if with_data:
        columns += ["data", "priority"]
    names = list(COLUMNS) + (["data", "priority"] if with_data else [])
    with huey.storage.db() as curs:
        rows = QueueCursor(huey.storage, curs).execute(
            "select %s from hueyscope_dead_letter where %s order by id" % (
                ", ".join(columns), " and ".join(where)), params).fetchall()
    entries = [dict(zip(names, row)) for row in rows]
    # Reasons are redacted when written; an entry parked by an earlier
    # version, or under a shorter key list, is redacted again when read.
    redaction = getattr(huey.storage, "redactor", None)
    if redaction is not None:
        redaction = redaction()
        for entry in entries:
            entry["reason"] = redaction.text(entry["reason"])
    return entries


def _again(huey, data):
    """The message of a failed entry, ready for a new attempt series.

    A known task gets its declared retries back and loses its eta; a task
    this process does not know keeps its message as it was.
    """
    try:
        task = huey.deserialize_task(bytes(data))
    except Exception:
        return bytes(data), None
    task.retries = type(task).default_retries
    task.eta = None
    return huey.serialize_task(task), task


def retry(huey, entries, actor=None):
    """Put ``entries`` back on the queue in one transaction; returns the tasks.

    Each known task is recorded as ``requeued`` (status enqueued again);
    ``actor``, who asked, goes into the event's reason.
    """
    storage = huey.storage
    again = [(e, *_again(huey, e["data"])) for e in entries]
    # On record before the message is on the queue: a consumer may run it
    # before this process gets to say so.
    requeued = time.time()
    with storage.db(commit=True) as curs:
        run = QueueCursor(storage, curs)
        for entry, data, _ in again:
            storage._insert_message(curs, data, entry["priority"])
            run.execute("delete from hueyscope_dead_letter where id = ?",
                        (entry["id"],))
    for entry, _, task in again:
        if task is not None:
            task.hueyscope_ts = requeued
            huey._emit("requeued", task, exc=_Requeued(by_whom(
                "retried from the failed set (%s, entry %d)" % (
                    entry["kind"], entry["id"]), actor)))
    return [task for _, _, task in again]


def by_whom(reason, actor):
    """``reason`` of an event, saying who asked when that is known."""
    return reason if actor is None else "%s, asked by %s" % (reason, actor)


def discard(huey, entries):
    """Delete ``entries`` from the failed set; returns how many went."""
    ids = [e["id"] for e in entries]
    if not ids:
        return 0
    with huey.storage.db(commit=True) as curs:
        QueueCursor(huey.storage, curs).execute(
            "delete from hueyscope_dead_letter where id in (%s)"
            % ",".join("?" * len(ids)), ids)
    return len(ids)


def forget_old(curs, storage, keep_seconds):
    """Delete entries older than ``keep_seconds`` (inside recovery's transaction)."""
    curs.execute("delete from hueyscope_dead_letter where queue = ? and parked < ?",
                 (storage.name, time.time() - keep_seconds))


class _Requeued(Exception):
    """Why a task is on the queue again (the reason of a ``requeued`` event)."""
