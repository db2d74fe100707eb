"""Retention: delete old history from the event store, keep the totals.

``hueyscope prune --older-than 30d`` deletes, from the event store:

- ``events`` rows older than the cutoff;
- ``tasks`` rows that finished before the cutoff -- never a task that may
  still run (waiting, enqueued, scheduled, executing or retrying), however
  old;
- ``queue_samples`` older than the cutoff.

It keeps ``rollup_hourly`` (the writer maintains the roll-ups in the same
transaction as the events, so per-task totals survive pruning) and ``runs``
(one small row per process, and the context of every roll-up).

Rows are deleted in chunks of a few thousand, each chunk in its own short
transaction, so a consumer recording into the same store waits at most one
chunk, never the whole prune. ``--vacuum`` then gives the freed pages back
to the file system; VACUUM needs the store to itself for a moment.

A store whose schema is not ours (:func:`hueyscope.events.schema.check_store`: a trigger
that came with the file, a view where a table belongs) is refused before
anything is deleted, and checked again inside each chunk's transaction;
no trigger may write anyway (:func:`hueyscope.readonly.authorizer`), and
each chunk's delete may run :data:`CHUNK_SECONDS`.

:func:`prune_store` is the same operation as a function, for automatic
retention from a long-running process (the command is ``prune``, the name
the command line looks up, hence the different name).
"""
import os
import sqlite3
import time

import click
import sqlite_utils

from hueyscope import readonly
from hueyscope.events import schema
from hueyscope.options import BadInput, Duration, events_option
from hueyscope.settings import Settings

# Statuses of tasks that may still run: their rows are never pruned.
ACTIVE_STATUSES = ("waiting", "enqueued", "scheduled", "executing", "retrying")
# Rows deleted per transaction.
CHUNK = 5000
# Seconds one chunk's delete may run (milliseconds on a healthy store).
CHUNK_SECONDS = 60.0
# Tables prune reads or writes; anything lacking one is not an event store.
REQUIRED_TABLES = ("events", "tasks", "queue_samples", "rollup_hourly", "runs")


def _open(db_or_path):
    """(connection, close_when_done) for a path, a sqlite3 connection or a
    sqlite_utils Database."""
    if isinstance(db_or_path, sqlite_utils.Database):
        return db_or_path.conn, False
    if isinstance(db_or_path, sqlite3.Connection):
        return db_or_path, False
    path = os.fspath(db_or_path)
    schema.check_event_store(path, must_exist=True)
    conn = schema.connect(path)
    return conn, True


def _check_tables(conn, what):
    schema.check_store(conn, what)
    names = {row[0] for row in conn.execute(
        "select name from sqlite_master where type = 'table'")}
    missing = [t for t in REQUIRED_TABLES if t not in names]
    if missing:
        raise ValueError("not a hueyscope event store (no %s table)"
                         % ", ".join(missing))


def _delete_in_chunks(conn, sql, params, chunk, what, limit=None):
    """Run a ``delete ... where rowid in (select ... limit ?)`` until it
    deletes nothing; one short transaction per chunk. Returns the count.

    The schema is checked inside each transaction, whose write lock keeps
    it from changing until the delete is done.
    """
    total = 0
    while True:
        if limit is not None:
            limit.arm()
        conn.execute("begin immediate")
        try:
            schema.check_store(conn, what)
            deleted = conn.execute(sql, (*params, chunk)).rowcount
            conn.execute("commit")
        except BaseException:
            conn.execute("rollback")
            raise
        total += deleted
        if deleted < chunk:
            return total


DELETE_EVENTS = """delete from events where id in (
  select id from events where ts < ? limit ?)"""

DELETE_TASKS = """delete from tasks where rowid in (
  select rowid from tasks where finished < ? and status not in (%s) limit ?)
""" % ", ".join("'%s'" % s for s in ACTIVE_STATUSES)

DELETE_SAMPLES = """delete from queue_samples where rowid in (
  select rowid from queue_samples where ts < ? limit ?)"""


def prune_store(db_or_path, older_than_seconds, vacuum=False, chunk=CHUNK, now=None):
    """Delete events, finished tasks and queue samples older than a cutoff.

    ``db_or_path`` is the event store: a path, a sqlite3 connection (not in
    a transaction) or a sqlite_utils Database. The cutoff is ``now`` (default:
    the current time) minus ``older_than_seconds``. Roll-ups and runs are
    kept; task log lines and progress values older than the cutoff go too. With ``vacuum`` the file is compacted afterwards.

    Returns a dict: ``cutoff`` (unix seconds), ``events``, ``tasks`` and
    ``queue_samples`` (rows deleted), ``vacuumed`` and, with vacuum,
    ``size_before`` / ``size_after`` in bytes. Raises ValueError (one line)
    for a bad duration or something that is not an event store.
    """
    if older_than_seconds is None or older_than_seconds <= 0:
        raise ValueError("older_than_seconds must be more than zero, not %r"
                         % older_than_seconds)
    cutoff = (time.time() if now is None else now) - older_than_seconds
    conn, owned = _open(db_or_path)
    what = "the event store" if not owned else os.fspath(db_or_path)
    # Its own connection only: a caller's keeps the settings it has.
    limit = readonly.guard(conn, CHUNK_SECONDS) if owned else None
    try:
        if conn.in_transaction:
            raise ValueError("prune needs a connection outside any transaction")
        try:
            _check_tables(conn, what)
        except sqlite3.DatabaseError as exc:
            raise ValueError("cannot read the event store: %s" % exc)
        outcome = {"cutoff": cutoff, "vacuumed": False}
        # Tasks first: a task row is the summary pages read, and it should
        # not outlive nothing but its events.
        deletes = [("tasks", DELETE_TASKS), ("events", DELETE_EVENTS),
                   ("queue_samples", DELETE_SAMPLES)]
        deletes += [(table, DELETE_TASK_NOTES.format(table=table))
                    for table in _note_tables(conn)]
        for table, sql in deletes:
            try:
                outcome[table] = _delete_in_chunks(
                    conn, sql, (cutoff,), chunk, what, limit)
            except sqlite3.Error as exc:
                better = readonly.explain(exc, limit)
                if better is exc:
                    raise
                raise better from None
        if vacuum:
            if limit is not None:
                # VACUUM copies the whole store: minutes for a large one.
                limit.seconds = None
                limit.arm()
            outcome["size_before"] = _size(conn)
            conn.execute("vacuum")
            # In WAL mode VACUUM writes the compacted pages to the WAL;
            # checkpoint so the main file (and the WAL) actually shrink.
            conn.execute("pragma wal_checkpoint(truncate)")
            outcome["size_after"] = _size(conn)
            outcome["vacuumed"] = True
        return outcome
    finally:
        if owned:
            conn.close()


# What running tasks told (m008): their age is their own time.
DELETE_TASK_NOTES = """delete from {table} where rowid in (
  select rowid from {table} where ts < ? limit ?)"""


def _note_tables(conn):
    """The tables of task log lines and progress values this store has."""
    names = {row[0] for row in conn.execute(
        "select name from sqlite_master where type = 'table'")}
    return [table for table in ("task_logs", "task_progress") if table in names]


def _size(conn):
    pages = conn.execute("pragma page_count").fetchone()[0]
    size = conn.execute("pragma page_size").fetchone()[0]
    return pages * size


def _iso(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _mb(n):
    return "%.1f MB" % (n / 1e6)


@click.command(short_help="Delete old history from the event store, keep totals.")
@click.option("--older-than", "older_than", type=Duration(), required=True,
              metavar="DURATION",
              help="Delete what is older than this: 90s, 15m, 12h, 30d, 2w.")
@click.option("--vacuum", is_flag=True,
              help="Compact the file afterwards (needs the store to itself "
                   "for a moment).")
@events_option
def prune(older_than, vacuum, events):
    """Delete old events, finished tasks and queue samples from the event store.

    Roll-ups (per task and hour) and runs are kept, so totals in reports
    survive. Tasks that may still run are never deleted, however old. Safe
    while a consumer records: rows go in small transactions.

    \b
    Examples:
        hueyscope prune --older-than 30d
        hueyscope prune --older-than 2w --vacuum --events /var/lib/app/events.db
    """
    try:
        path = Settings.build(only=("events",), events=events).events
        outcome = prune_store(path, older_than, vacuum=vacuum)
    except sqlite3.DatabaseError as exc:
        raise BadInput("cannot prune %s: %s" % (path, exc))
    click.echo("pruned %s: deleted %d events, %d tasks, %d queue samples "
               "older than %s; kept roll-ups and runs" % (
                   path, outcome["events"], outcome["tasks"],
                   outcome["queue_samples"], _iso(outcome["cutoff"])))
    if outcome["vacuumed"]:
        click.echo("vacuumed: %s -> %s" % (_mb(outcome["size_before"]),
                                           _mb(outcome["size_after"])))
