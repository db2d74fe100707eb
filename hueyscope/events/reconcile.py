"""Reconcile the event store with what the queue knows.

A SIGKILL loses the events of the last flush interval: a task that completed
just before it has its result stored in the queue, but the store still shows
it enqueued or executing, and the report would call it lost. A consumer
running this at every health check records the missing ``complete`` for
each such task, under the run that executed it when the store knows it.

The queue decides nothing here: this only reads queue.db (the stored
results) to correct the history in events.db. A task is reconciled only when
two looks at least ``quiet`` seconds apart both find it open in the store
with its result in the queue: a live consumer's events, a flush interval on
their way to the store, have landed by the second look and are not recorded
twice. The lookup runs on any SQL queue huey has (SQLite, PostgreSQL), in
its own tables and parameter style.
"""
import logging
import os
import time
from types import SimpleNamespace

from hueyscope.events.recorder import recorder_for

logger = logging.getLogger("hueyscope.reconcile")

OPEN = ("enqueued", "scheduled", "executing", "retrying")
QUIET_SECONDS = 10.0
CHUNK = 500
LIMIT = 5000  # open tasks looked at per call, those quiet the longest first


class _Finished:
    """What the recorder reads of a task it only knows by id and name."""

    on_complete = on_error = eta = None
    retries = 0
    args = kwargs = ()

    def __init__(self, task_id, name, priority):
        self.id, self.name, self.priority = task_id, name, priority


def open_tasks(recorder, quiet, now):
    """[(task_id, task, priority, run_id)] of store tasks not finished, quiet for long.

    Read through the recorder's writer process: a consumer never maps the
    event store itself (see :mod:`hueyscope.events.writer_process`).
    """
    if not os.path.exists(recorder.path):
        return []
    rows = recorder.query_store(
        "select task_id, task, priority, run_id from tasks where status in "
        "(%s) and updated < ? order by updated limit ?"
        % ",".join("?" * len(OPEN)), OPEN + (now - quiet, LIMIT))
    return rows or []


def completed_in_queue(huey, task_ids):
    """The ids of ``task_ids`` whose result (not an error) is stored in the queue."""
    from hueyscope.leases import QueueCursor
    from hueyscope.recovery import success

    storage = huey.storage
    done = set()
    with storage.db() as curs:
        curs = QueueCursor(_described(storage), curs)
        for i in range(0, len(task_ids), CHUNK):
            chunk = task_ids[i:i + CHUNK]
            rows = curs.execute(
                "select key, value from {kv} where queue = ? and key in (%s)"
                % ",".join("?" * len(chunk)), [storage.name] + chunk).fetchall()
            done.update(key for key, value in rows if success(huey, bytes(value)))
    return done


def _described(storage):
    """``storage``, or what QueueCursor needs to know of it for huey's own storages.

    hueyscope's storages name their tables and parameter style; huey's
    SqliteStorage has ``kv`` and ``?``, its PostgresStorage prefixed tables
    and ``%s``.
    """
    if hasattr(storage, "queue_tables") and hasattr(storage, "param_style"):
        return storage
    table_kv = getattr(storage, "table_kv", None)
    if table_kv is not None:  # huey's PostgresStorage
        return SimpleNamespace(queue_tables={"kv": table_kv, "task": storage.table_task},
                               param_style="pyformat")
    return SimpleNamespace(queue_tables={"kv": "kv", "task": "task"},
                           param_style="qmark")


def reconcile(huey, seen, quiet=QUIET_SECONDS):
    """Record ``complete`` for tasks the store shows open whose result is stored.

    ``seen`` maps task id to when (monotonic) an earlier call first found
    it so; the caller keeps it between calls. Returns how many it recorded.
    SQL queues only (SQLite, PostgreSQL); never raises: a failure is logged,
    and the next call tries again.
    """
    recorder = recorder_for(huey)
    if recorder is None or not hasattr(huey.storage, "db"):
        return 0
    now = time.monotonic()
    try:
        rows = open_tasks(recorder, quiet, time.time())
        done = completed_in_queue(huey, [r[0] for r in rows]) if rows else set()
    except Exception:
        logger.exception("Could not reconcile the event store with queue %s; "
                         "trying again at the next health check.", huey.name)
        return 0
    recorded = 0
    still = {}
    for task_id, name, priority, run_id in rows:
        if task_id not in done:
            continue
        first = seen.get(task_id, now)
        if now - first >= quiet:
            huey._emit("complete", _Finished(task_id, name, priority),
                       run_id=run_id)
            recorded += 1
        else:
            still[task_id] = first
    seen.clear()
    seen.update(still)
    return recorded
