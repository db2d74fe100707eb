"""Datasette metadata for event stores: what every table and column means.

:func:`database_metadata` describes one event store; :func:`build_metadata`
wraps several into the document Datasette reads. The canned queries are
:data:`hueyscope.events.queries.QUERIES`, the same SQL the static report
runs, published read-only, with run times and waits shown in milliseconds
(see :func:`display_sql`).
"""
import functools
import re

from hueyscope.events.queries import QUERIES

TITLE = "hueyscope event store"
DESCRIPTION_HTML = (
    "<p>Every lifecycle signal of your Huey tasks, as recorded by hueyscope. "
    "Times are unix seconds (UTC), shown as ISO-8601; durations and waits are "
    "in seconds in the tables, in milliseconds in the canned queries. Start "
    "with the <strong>tasks</strong> table (one row per task id) or the "
    "canned queries below each database.</p>"
    "<p>Read-only: nothing here can change the store.</p>"
)

# Columns holding a point in time (unix seconds, UTC): shown as ISO-8601.
TIME_COLUMNS = (
    "ts", "started", "stopped", "heartbeat", "enqueued", "ready", "finished",
    "updated", "eta", "hour", "minute", "first_seen", "last_seen",
)
SECONDS = "s"

# What the recorder stores for arguments longer than --max-arg-chars.
_TRUNCATED = ("Longer than the recorder keeps: a JSON string of the first "
              "characters, ending in ...[truncated N chars].")
_SHARED = {
    "run_id": "The recording process (runs.id); for tasks, the run that last "
              "executed it.",
    "queue": "Huey queue name.",
    "task_id": "Huey task id (one id per task instance, kept across retries).",
    "task": "Huey task name, e.g. quick_add.",
    "priority": "Huey priority: higher runs first.",
    "eta": "When a scheduled task was due (unix seconds, UTC).",
    "error_type": "Exception class of the error.",
    "error": "Exception message (redacted, truncated).",
    "fingerprint": "Stable hash of error type, normalised message and innermost "
                   "frame: the same bug gets the same fingerprint.",
    "host": "Host name of the process.",
    "pid": "Process id.",
}

TABLES = {
    "events": {
        "description": "One row per Huey signal, append-only: the full history. "
                       "Newest first.",
        "sort_desc": "ts",
        "facets": ["signal", "task"],
        "label_column": "signal",
        "units": {"duration": SECONDS, "wait": SECONDS},
        "columns": {
            "id": "Row id, in order of recording.",
            "ts": "When the signal fired (unix seconds, UTC).",
            "run_id": _SHARED["run_id"],
            "queue": _SHARED["queue"],
            "task_id": _SHARED["task_id"],
            "task": _SHARED["task"],
            "signal": "Huey signal: enqueued, scheduled, executing, complete, "
                      "error, retrying, locked, revoked, canceled, expired, "
                      "interrupted, timeout or rate-limited.",
            "attempt": "Execution attempt: 1 for the first, 2 for the first retry.",
            "retries_left": "Retries huey still had for the task.",
            "priority": _SHARED["priority"],
            "eta": _SHARED["eta"],
            "duration": "On terminal signals: seconds from executing to this signal.",
            "wait": "On executing: seconds from enqueue (or eta) to executing.",
            "error_type": _SHARED["error_type"],
            "error": _SHARED["error"],
            "traceback": "Python traceback of the error (redacted).",
            "fingerprint": _SHARED["fingerprint"],
            "args": "Task positional arguments as a JSON array (redacted). "
                    + _TRUNCATED,
            "kwargs": "Task keyword arguments as a JSON object (redacted). "
                      + _TRUNCATED,
            "host": _SHARED["host"],
            "pid": _SHARED["pid"],
            "worker": "Worker thread or process name.",
            "task_seq": "The task's tasks.seq: all events of one task have the "
                        "same task_seq (indexed; task ids are random, so "
                        "events are not indexed by them).",
        },
    },
    "tasks": {
        "description": "One row per task id, kept current by the recorder: "
                       "status, timing, attempts and last error. Newest first.",
        "sort_desc": "enqueued",
        "facets": ["status", "task"],
        "label_column": "task",
        "units": {"wait": SECONDS, "duration": SECONDS},
        "columns": {
            "task_id": _SHARED["task_id"],
            "task": _SHARED["task"],
            "queue": _SHARED["queue"],
            "status": "waiting, enqueued, scheduled, executing, retrying, "
                      "complete, failed, locked, revoked, expired, canceled, "
                      "interrupted, timeout or rate-limited. A task 'executing' "
                      "whose run has died is lost: see the in-flight query.",
            "enqueued": "First enqueue (unix seconds, UTC).",
            "ready": "When it could start: the enqueue time or its eta.",
            "started": "Start of the last execution (unix seconds, UTC).",
            "finished": "End of the last execution (unix seconds, UTC).",
            "attempts": "Executions so far (2 or more: it was retried).",
            "wait": "Seconds from ready to the first execution.",
            "duration": "Seconds the last execution ran.",
            "error_type": _SHARED["error_type"],
            "error": "Message of the last error.",
            "fingerprint": _SHARED["fingerprint"],
            "priority": _SHARED["priority"],
            "eta": _SHARED["eta"],
            "parent_id": "Previous step of a pipeline (tasks.task_id).",
            "run_id": _SHARED["run_id"],
            "updated": "Last change of this row (unix seconds, UTC).",
            "seq": "Order in which the store first saw this task; "
                   "events.task_seq points here.",
        },
    },
    "runs": {
        "description": "One row per process that recorded events: consumers "
                       "(with heartbeats), producers and benchmarks. Newest first.",
        "sort_desc": "started",
        "facets": ["role", "stop_reason"],
        "label_column": "host",
        "columns": {
            "id": "Run id.",
            "role": "consumer, producer or bench.",
            "host": _SHARED["host"],
            "pid": _SHARED["pid"],
            "started": "Process start (unix seconds, UTC).",
            "stopped": "Process stop, if it stopped cleanly or was noticed dead.",
            "stop_reason": "graceful, sigterm, sigint, or killed (noticed later).",
            "workers": "Number of huey workers.",
            "worker_type": "thread, process or greenlet.",
            "queue": _SHARED["queue"],
            "backend": "Queue storage: sqlite, redis, postgresql.",
            "versions": "Python, huey and hueyscope versions (JSON).",
            "heartbeat": "Last sign of life of a consumer (unix seconds, UTC).",
            "events_written": "Events this process stored.",
            "events_dropped": "Events this process could not store (never "
                              "dropped silently: counted here).",
            "app": "The Huey instance, as module:attribute.",
            "store_recreated": "When this process found the event store "
                               "deleted under it and created it again.",
            "events_lost": "Events this process had stored in an event "
                           "store file that was deleted under it.",
        },
    },
    "queue_samples": {
        "description": "Queue depth sampled by consumers over time. Newest first.",
        "sort_desc": "ts",
        "facets": ["queue"],
        "columns": {
            "ts": "Sample time (unix seconds, UTC).",
            "queue": _SHARED["queue"],
            "pending": "Messages waiting in the queue.",
            "scheduled": "Tasks waiting for their eta.",
            "in_flight": "Tasks being executed.",
            "run_id": "The consumer that took the sample (runs.id).",
        },
    },
    "rollup_hourly": {
        "description": "Counts and sums per hour, task and signal, kept in the "
                       "same transaction as the events: totals survive pruning.",
        "sort_desc": "hour",
        "facets": ["signal", "task"],
        "units": {"duration_sum": SECONDS, "duration_max": SECONDS,
                  "wait_sum": SECONDS},
        "columns": {
            "hour": "Start of the hour (unix seconds, UTC).",
            "task": _SHARED["task"],
            "signal": "Huey signal.",
            "count": "Signals in that hour.",
            "duration_sum": "Sum of durations (seconds).",
            "duration_max": "Longest duration (seconds).",
            "wait_sum": "Sum of queue waits (seconds).",
        },
    },
    "alerts": {
        "description": "Alert rules a consumer found firing (consume "
                       "--check-every): one row per rule per check. Newest "
                       "first.",
        "sort_desc": "ts",
        "facets": ["rule"],
        "label_column": "rule",
        "columns": {
            "id": "Row id, in order of recording.",
            "ts": "When the check ran (unix seconds, UTC).",
            "rule": "oldest_pending, failure_rate, lost_task, no_consumer, "
                    "missed_tick, disk_free or store_size.",
            "message": "What fired, with the value and the threshold.",
            "value": "What the rule measured (seconds, a share, a count or "
                     "bytes).",
            "threshold": "The rule's threshold, in the same unit: it fires "
                         "above it (disk_free: free bytes below it).",
            "run_id": "The consumer run that checked (runs.id).",
        },
    },
}

HIDE_SQL_LINES = 12

# Internal tables nobody needs to browse.
ALWAYS_HIDDEN = ("_sqlite_migrations",)


# Output columns of the shared SQL holding a run time or a queue wait in
# seconds: a float such as 0.024796724319458008 reads better as 24.8 ms.
MILLISECOND_COLUMNS = re.compile(r"^(duration|wait|wait_p\d+|run_p\d+)$")
# Seconds from enqueue to the end of a retried task: kept in seconds, to the ms.
SECOND_COLUMNS = ("total_seconds",)
MS_NOTE = " Run times and waits are in milliseconds (columns ending in _ms)."


@functools.lru_cache(maxsize=None)
def _query_columns():
    """{query name: its output columns}, read from an empty store in memory."""
    import sqlite_utils

    from hueyscope.events.schema import migrate

    db = sqlite_utils.Database(memory=True)
    try:
        migrate(db)
        columns = {}
        for name, query in QUERIES.items():
            cursor = db.conn.execute("select * from (\n%s\n) limit 0" % query.sql,
                                     {p: "" for p in query.params})
            columns[name] = tuple(d[0] for d in cursor.description)
        return columns
    finally:
        db.close()


def in_milliseconds(name):
    """True if query ``name`` shows a run time or a wait (in milliseconds)."""
    return any(MILLISECOND_COLUMNS.match(c) for c in _query_columns()[name])


def display_sql(name):
    """The shared SQL of query ``name``, run times and waits in milliseconds.

    The shared SQL is kept whole, as a subquery SQLite runs as a co-routine:
    it keeps its plan (its indexes) and its order, and the outer select
    only rounds columns as the rows stream by: ``duration`` becomes
    ``duration_ms``, to 0.1 ms.
    A query with no such column is returned as it is.
    """
    sql = QUERIES[name].sql
    shown, rounded = [], False
    for column in _query_columns()[name]:
        if MILLISECOND_COLUMNS.match(column):
            shown.append("round(%s * 1000, 1) as %s_ms" % (column, column))
        elif column in SECOND_COLUMNS:
            shown.append("round(%s, 3) as %s" % (column, column))
        else:
            shown.append("[%s]" % column)
            continue
        rounded = True
    if not rounded:
        return sql
    return "select %s\nfrom (\n%s\n)" % (", ".join(shown), sql)


def canned_queries():
    """The shared named SQL as Datasette canned queries, never writable."""
    queries = {}
    for q in QUERIES.values():
        sql = display_sql(q.name)
        queries[q.name] = {
            "title": q.title,
            "description": q.description + (
                MS_NOTE if in_milliseconds(q.name) else ""),
            "sql": sql,
            "params": list(q.params),
            "write": False,
            # Long SQL behind a "show" link, so the answer comes first.
            "hide_sql": sql.count("\n") >= HIDE_SQL_LINES,
        }
    return queries


def database_metadata(hidden=()):
    """Metadata of one event store; ``hidden`` adds more internal tables."""
    tables = {name: dict(meta) for name, meta in TABLES.items()}
    for name in tuple(ALWAYS_HIDDEN) + tuple(hidden):
        tables.setdefault(name, {})["hidden"] = True
    return {
        "description": "A hueyscope event store.",
        "tables": tables,
        "queries": canned_queries(),
        # read by the render_cell hook in hueyscope.browse.app
        "plugins": {"hueyscope": {"time_columns": list(TIME_COLUMNS)}},
    }


def build_metadata(databases):
    """The whole metadata document; ``databases`` maps name -> hidden tables."""
    return {
        "title": TITLE,
        "description_html": DESCRIPTION_HTML,
        "databases": {
            name: database_metadata(hidden) for name, hidden in databases.items()
        },
    }
