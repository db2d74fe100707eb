"""Reconcile the event store with what the queue knows.

A SIGKILL loses the events of the last flush interval: a task that completed
just before it has its outcome in the queue, but the store still shows it
waiting, enqueued, executing or failed (an earlier attempt), and the report
would call it lost. A consumer running this at every health check records
the missing outcome for each such task, under the run that executed it.

On a leased queue the queue's word is the outbox ``hueyscope_settled``: a
row for each lease released for an outcome, written in the transaction
that released it (so it exists exactly when the outcome is durable),
whatever became of the result afterwards (read, expired, never stored).
Rows quiet for ``quiet`` seconds are compared with the store's task rows:
an outcome the store lacks is recorded, with the time of the release, unless
the store heard of the task later than that; then the rows are deleted.

On a queue without leases (at-most-once SQLite) the stored results are all
there is:

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

from hueyscope.events.rows import FINAL_STATUS

logger = logging.getLogger("hueyscope.reconcile")

OPEN = ("enqueued", "scheduled", "executing", "retrying", "waiting")
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
    from hueyscope.queue.tables import QueueCursor
    from hueyscope.queue.recovery import success

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


def reconcile(huey, recorder, seen=None, quiet=QUIET_SECONDS):
    """Record the outcomes the queue knows and the store lacks; returns how many.

    ``recorder`` is the Huey's :class:`~hueyscope.events.recorder.Recorder`.
    ``seen`` (results path only) maps task id to when (monotonic) an earlier
    call first found it so; the caller keeps it between calls. Never raises.
    """
    if recorder is None:
        return 0
    if getattr(huey.storage, "leased", False):
        try:
            return reconcile_settled(huey, recorder, quiet)
        except Exception:
            logger.exception("Could not reconcile the event store with %s.",
                             huey.name)
            return 0
    if seen is None or not hasattr(huey.storage, "db"):
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
            task = _Finished(task_id, name, priority)
            task.hueyscope_run_id = run_id  # read by the recorder alone
            huey._emit("complete", task)
            recorded += 1
        else:
            still[task_id] = first
    seen.clear()
    seen.update(still)
    return recorded


def reconcile_settled(huey, recorder, quiet=QUIET_SECONDS):
    """The outbox path of :func:`reconcile`, for leased queues."""
    from hueyscope.queue.tables import QueueCursor

    storage = huey.storage
    with storage.db() as curs:
        rows = QueueCursor(storage, curs).execute(
            "select id, task_id, task, signal, priority, run_id, ts from "
            "hueyscope_settled where queue = ? and ts < ? order by id limit ?",
            (storage.name, time.time() - quiet, LIMIT)).fetchall()
    if not rows:
        return 0
    last = {}
    for row in rows:  # in release order: the latest outcome of each task wins
        last[row[1]] = row
    known = {}
    if os.path.exists(recorder.path):
        ids = list(last)
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i:i + CHUNK]
            found = recorder.query_store(
                "select task_id, status, updated from tasks where task_id in "
                "(%s)" % ",".join("?" * len(chunk)), chunk)
            if found is None:  # the store did not answer: try again later
                return 0
            known.update((r[0], r[1:]) for r in found)
    # Claimed before anything is recorded: of two consumers reconciling at
    # once, the one whose delete took a row records its outcome.
    claimed = _claim(storage, [row[0] for row in rows])
    recorded = 0
    for task_id, (row_id, _, name, signal, priority, run_id, ts) in last.items():
        if row_id not in claimed:
            continue
        status, updated = known.get(task_id, (None, None))
        if signal not in FINAL_STATUS or status == FINAL_STATUS[signal]:
            continue
        if updated is not None and updated > ts:
            continue  # the store heard of the task after this outcome
        task = _Finished(task_id, name, priority)
        task.hueyscope_run_id, task.hueyscope_ts = run_id, ts
        huey._emit(signal, task)
        recorded += 1
    if recorded:
        logger.info("Recorded %d outcome(s) the event store had lost, from "
                    "the queue's outbox.", recorded)
    return recorded


def _claim(storage, ids):
    """Delete the outbox rows ``ids``; the set of those this call deleted.

    Exactly the rows read: on PostgreSQL a row with a lower id can commit
    after them, not yet quiet and not yet looked at.
    """
    from hueyscope.queue.tables import QueueCursor

    claimed = set()
    with storage.db(commit=True) as curs:
        curs = QueueCursor(storage, curs)
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i:i + CHUNK]
            claimed.update(row[0] for row in curs.execute(
                "delete from hueyscope_settled where id in (%s) returning id"
                % ",".join("?" * len(chunk)), chunk).fetchall())
    return claimed
