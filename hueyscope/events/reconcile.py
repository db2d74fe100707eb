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
twice.
"""
import os
import time

from hueyscope.events.recorder import recorder_for

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
    from hueyscope.recovery import success

    storage = huey.storage
    done = set()
    for i in range(0, len(task_ids), CHUNK):
        chunk = task_ids[i:i + CHUNK]
        rows = storage.sql(
            "select key, value from kv where queue = ? and key in (%s)"
            % ",".join("?" * len(chunk)), [storage.name] + chunk, results=True)
        done.update(key for key, value in rows if success(huey, value))
    return done


def reconcile(huey, seen, quiet=QUIET_SECONDS):
    """Record ``complete`` for tasks the store shows open whose result is stored.

    ``seen`` maps task id to when (monotonic) an earlier call first found
    it so; the caller keeps it between calls. Returns how many it recorded.
    SQLite queues only; never raises.
    """
    recorder = recorder_for(huey)
    if recorder is None or not hasattr(huey.storage, "sql"):
        return 0
    now = time.monotonic()
    try:
        rows = open_tasks(recorder, quiet, time.time())
        done = completed_in_queue(huey, [r[0] for r in rows]) if rows else set()
    except Exception:
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
