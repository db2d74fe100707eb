"""Reading what running tasks told: progress and log lines, for status and reports."""
import os
import sqlite3

from hueyscope.readonly import read_only

RUNNING_PROGRESS = """select p.task_id, p.task, p.fraction, p.message, p.ts
from task_progress p join tasks t on t.task_id = p.task_id
where t.status = 'executing' order by p.ts desc limit ?"""


def _has(conn, table):
    return conn.execute("select 1 from sqlite_master where type = 'table' "
                        "and name = ?", (table,)).fetchone() is not None


def running_progress(events, limit=50):
    """[{task_id, task, fraction, message, ts}] of the running tasks that
    reported progress, newest first; [] without a store or the table."""
    if not events or not os.path.exists(events):
        return []

    def read(conn):
        if not _has(conn, "task_progress"):
            return []
        keys = ("task_id", "task", "fraction", "message", "ts")
        return [dict(zip(keys, row))
                for row in conn.execute(RUNNING_PROGRESS, (limit,))]

    try:
        return read_only(events, read)
    except sqlite3.Error:
        return []


def task_progress(conn, task_id):
    """The last progress of ``task_id`` as a dict, or None."""
    if not _has(conn, "task_progress"):
        return None
    row = conn.execute("select fraction, message, ts from task_progress "
                       "where task_id = ?", (task_id,)).fetchone()
    return dict(zip(("fraction", "message", "ts"), row)) if row else None


def task_logs(conn, task_id, limit=500):
    """The log lines of ``task_id``, oldest first, as dicts."""
    if not _has(conn, "task_logs"):
        return []
    keys = ("ts", "attempt", "level", "logger", "message", "pid", "worker")
    return [dict(zip(keys, row)) for row in conn.execute(
        "select ts, attempt, level, logger, message, pid, worker from task_logs "
        "where task_id = ? order by ts, id limit ?", (task_id, limit))]


def progress_text(item):
    """``42% step 3`` for a progress dict."""
    fraction = item.get("fraction")
    text = "-" if fraction is None else "%3.0f%%" % (fraction * 100)
    if item.get("message"):
        text += " " + item["message"]
    return text
