"""Schema of the event store (events.db), versioned with sqlite-utils Migrations.

Times are unix seconds (UTC) stored as REAL, so SQL can subtract them;
reports and Datasette show them as ISO-8601. Table and column names are a
contract: reports, canned queries and users' own SQL rely on them.

Tables:

- ``runs``: one row per process that recorded (consumer, producer, bench).
- ``events``: one row per huey signal, append-only.
- ``tasks``: one row per task id, kept current by the writer.
- ``queue_samples``: pending / scheduled / in-flight counts over time.
- ``rollup_hourly``: per task, signal and hour counts and sums, kept by the
  writer in the same transaction, so totals survive retention pruning.
- ``alerts``: alert rules a consumer found firing (m007).
- ``task_progress`` and ``task_logs``: what running tasks told (m008).
"""
import functools
import sqlite3

import sqlite_utils
from sqlite_utils import Migrations

# The rows the writer builds for these tables, column by column: kept in a
# module of their own so the writer process need not import sqlite-utils.
from hueyscope.events.columns import EVENT, TASK  # noqa: F401
from hueyscope.events.sqlite_file import connect  # noqa: F401 (schema.connect)
from hueyscope import readonly
from hueyscope.readonly import check_schema, read_only, sqlite_uri

migrations = Migrations("hueyscope")

# Every huey signal, in lifecycle order.
SIGNALS = (
    "enqueued", "scheduled", "executing", "complete", "error", "retrying",
    "locked", "revoked", "canceled", "expired", "interrupted", "timeout",
    "rate-limited",
    # Not huey's: hueyscope's recovery of a dead consumer's leased task, a
    # message no task could be built from, an enqueue that raised, a task
    # put back on the queue from the failed set, a revocation and a
    # restore asked for by hand, a failed-set entry deleted by hand, a pause
    # and a resume of a task name, an enqueue of a unique task whose key was
    # held.
    "recovered", "lost", "dropped", "not-queued", "requeued", "revoke",
    "restore", "discard", "pause", "resume", "deduplicated",
)
# Signals after which an execution attempt is over (duration is measured to them).
TERMINAL_SIGNALS = frozenset((
    "complete", "error", "locked", "canceled", "interrupted", "timeout",
    "rate-limited",
))

TABLES = ("runs", "events", "tasks", "queue_samples", "rollup_hourly", "alerts")


@migrations()
def m001_initial(db):
    db["runs"].create({
        "id": str, "role": str, "host": str, "pid": int,
        "started": float, "stopped": float, "stop_reason": str,
        "workers": int, "worker_type": str, "queue": str, "backend": str,
        "versions": str, "heartbeat": float,
        "events_written": int, "events_dropped": int, "app": str,
    }, pk="id", not_null={"role", "host", "pid", "started"},
        defaults={"events_written": 0, "events_dropped": 0})

    db["events"].create({
        "id": int, "ts": float, "run_id": str, "queue": str,
        "task_id": str, "task": str, "signal": str,
        "attempt": int, "retries_left": int, "priority": int, "eta": float,
        "duration": float, "wait": float,
        "error_type": str, "error": str, "traceback": str, "fingerprint": str,
        "args": str, "kwargs": str,
        "host": str, "pid": int, "worker": str,
    }, pk="id", not_null={"ts", "signal"})

    db["tasks"].create({
        "task_id": str, "task": str, "queue": str, "status": str,
        "enqueued": float, "ready": float, "started": float,
        "finished": float, "attempts": int, "wait": float, "duration": float,
        "error_type": str, "error": str, "fingerprint": str,
        "priority": int, "eta": float, "parent_id": str, "run_id": str,
        "updated": float,
    }, pk="task_id", not_null={"status"}, defaults={"attempts": 0})

    db["queue_samples"].create({
        "ts": float, "queue": str, "pending": int, "scheduled": int,
        "in_flight": int, "run_id": str,
    }, not_null={"ts"})

    db["rollup_hourly"].create({
        "hour": float, "task": str, "signal": str, "count": int,
        "duration_sum": float, "duration_max": float, "wait_sum": float,
    }, pk=("hour", "task", "signal"), defaults={"count": 0})

    for table, columns, where in INDEXES:
        db.execute("create index if not exists idx_%s_%s on %s (%s)%s" % (
            table, "_".join(columns), table, ", ".join(columns),
            " where " + where if where else ""))


# Every column a report, canned query or Datasette facet filters, sorts or
# groups on has an index. These are m001's; m002 and m003 add and replace some.
INDEXES = (
    ("events", ["ts"], None),
    ("events", ["task_id", "ts"], None),
    ("events", ["task", "ts"], None),
    ("events", ["signal", "ts"], None),
    ("events", ["run_id"], None),
    # Partial: only error rows carry a fingerprint, and the writer should not
    # pay an index insert for every other signal.
    ("events", ["fingerprint"], "fingerprint is not null"),
    ("tasks", ["status"], None),
    ("tasks", ["task", "finished"], None),
    ("tasks", ["finished"], None),
    ("tasks", ["enqueued"], None),
    ("tasks", ["run_id"], None),
    ("tasks", ["parent_id"], "parent_id is not null"),
    ("tasks", ["fingerprint"], "fingerprint is not null"),
    ("tasks", ["duration"], None),
    ("queue_samples", ["ts"], None),
    ("runs", ["started"], None),
    ("rollup_hourly", ["task", "hour"], None),
)


def migration_names():
    """The names of the event store's migrations, in order.

    The writer process opens a store that has them all without importing
    sqlite-utils (see :func:`hueyscope.events.sqlite_file.open_current`).
    """
    return [m.name for m in getattr(migrations, "_migrations", ())]


def open_event_store(path, create=True):
    """Open (and migrate) the event store at ``path``; a sqlite_utils Database.

    With create=False the file must already be an event store. Raises
    ValueError with a one-line message for anything that is not one.
    """
    check_event_store(path, must_exist=not create)
    db = sqlite_utils.Database(connect(path))
    try:
        migrate(db)
    except sqlite3.DatabaseError as exc:
        db.close()
        raise ValueError("cannot write event store %s: %s" % (path, exc))
    return db


def migrate(db):
    """Apply pending migrations, one process at a time.

    A producer and a consumer often create the same store at the same
    moment. BEGIN IMMEDIATE takes the write lock before the pending list is
    read, so the second process waits, then finds nothing left to apply;
    and the migrations table and m001 appear together, never one without
    the other.
    """
    if not migrations.pending(db):
        return
    db.execute("begin immediate")
    try:
        migrations.apply(db)
        db.execute("commit")
    except BaseException:
        if db.conn.in_transaction:
            db.execute("rollback")
        raise


def database_names(paths):
    """A unique name per event store file: its stem, then stem_2, stem_3...

    Datasette serves each file under this name, and report links to Datasette
    use the same one.
    """
    import pathlib

    names = []
    for path in paths:
        stem = pathlib.Path(path).stem or "events"
        name, i = stem, 2
        while name in names:
            name = "%s_%d" % (stem, i)
            i += 1
        names.append(name)
    return names


def check_event_store(path, must_exist=True, file_only=False):
    """Raise ValueError (one line) unless ``path`` is, or may become, an event store.

    A missing file is fine when must_exist is False; a SQLite file with
    tables but none of ours, or a non-SQLite file, is refused without being
    written to.

    ``file_only``: read the database file alone -- no WAL, no locks, no
    memory map of the WAL index -- and refuse only what is certainly not a
    store; a file that cannot be read right now (a full disk, a checkpoint
    under way) passes. For a recording process, which must not map the
    store (see :mod:`hueyscope.events.writer_process`) nor fail because
    the store is in trouble: its writer process reports that.
    """
    import os

    if not os.path.exists(path):
        if must_exist:
            raise ValueError("no event store at %s" % path)
        return
    if os.path.isdir(path):
        raise ValueError("%s is a folder, not an event store" % path)
    with open(path, "rb") as f:
        header = f.read(16)
    if not header:
        if must_exist:
            raise ValueError("%s is empty, not an event store" % path)
        return
    if header != b"SQLite format 3\x00":
        raise ValueError("%s is not a SQLite database" % path)
    try:
        read = functools.partial(_tables_and_migrations, path=path)
        if file_only:
            names, applied = _file_only(path, read)
        else:
            names, applied = read_only(path, read)
    except sqlite3.Error as exc:
        if file_only:
            return
        raise ValueError("%s is not a readable SQLite database: %s" % (path, exc))
    # A store another process is creating right now may show only the
    # migrations table (older sqlite-utils committed it on its own).
    names.discard(migrations.migrations_table)
    if names and "events" not in names:
        raise ValueError(
            "%s is a SQLite database but not a hueyscope event store "
            "(no events table)" % path)
    if must_exist and "events" not in names:
        raise ValueError("%s is not a hueyscope event store" % path)
    newer = [name for name in applied if name not in KNOWN_MIGRATIONS]
    if newer:
        # Its tables may mean something this code does not know: writing
        # into it, or reading it as if it were ours, would misstate it.
        raise ValueError(
            "event store %s was written by a newer hueyscope (migration %s is "
            "unknown to this version): upgrade hueyscope; left unchanged"
            % (path, newer[0]))


@functools.lru_cache(maxsize=None)
def expected_objects():
    """{name: type} of every table and index the migrations create."""
    db = sqlite_utils.Database(memory=True)
    try:
        migrations.apply(db)
        return {name: kind for kind, name in db.execute(
            "select type, name from sqlite_master")}
    finally:
        db.close()


def check_store(conn, path, schema="main"):
    """Raise :class:`hueyscope.readonly.ForeignSchema` (a ValueError, one
    line) unless the event store open as ``schema`` on ``conn`` is ours.

    A store copied from another host may have been crafted: ``tasks`` a
    view that never ends, ``_sqlite_migrations`` a recursive view, a
    trigger that writes when ``prune`` deletes. Its sqlite_master is
    compared with what the migrations create (:func:`expected_objects`;
    see :func:`hueyscope.readonly.check_schema`) before anything else is
    read. Every reader calls it on the connection it reads with.
    """
    names = expected_objects()
    check_schema(conn, "event store %s" % path, names, schema,
                 no_generated=sorted(n for n, kind in names.items()
                                     if kind == "table"))


def _file_only(path, read):
    """``read(conn)`` on the database file alone (immutable: no WAL, no -shm)."""
    conn = readonly.connect(sqlite_uri(path, "mode=ro&immutable=1"), uri=True)
    try:
        return read(conn)
    finally:
        conn.close()


def _tables_and_migrations(conn, path):
    """(table names, names of our migrations applied) of an open store.

    Raises ValueError first if its schema is not ours (:func:`check_store`):
    the migrations table itself may be a view that never ends.
    """
    check_store(conn, path)
    names = {row[0] for row in conn.execute(
        "select name from sqlite_master where type = 'table'")}
    applied = []
    table = migrations.migrations_table
    # Without these columns (a table of another sqlite-utils version, or
    # one a process creating the store has only begun) it names none of ours.
    columns = {row[1] for row in conn.execute("pragma table_info([%s])" % table)}
    if {"migration_set", "name"} <= columns:
        applied = [row[0] for row in conn.execute(
            "select name from [%s] where migration_set = ? order by rowid"
            % table, (migrations.name,))]
    return names, applied


@migrations()
def m002_percentile_indexes(db):
    """Covering indexes for per-task latency percentiles (queries.latency_percentiles).

    Each task's waits and run times are read in order straight from an index,
    with ``finished`` alongside for the time filter, so percentiles over a
    million events need no sort of the tasks table.
    """
    db["tasks"].create_index(["task", "wait", "finished"], if_not_exists=True)
    db["tasks"].create_index(["task", "duration", "finished"], if_not_exists=True)


@migrations()
def m003_task_seq(db):
    """Events find their task through an integer that grows as tasks appear.

    An index on (task_id, ts) puts every event at a random place, because
    huey's task ids are random uuids: each commit then rewrites about one
    index page per task it touches, and the cost grows with the store (at a
    million events it was the larger half of the writer's time). ``tasks.seq``
    numbers tasks in the order the store first sees them, so
    ``events.task_seq`` and its index only ever grow at the end.
    Error and lock events keep an index by task id of their own: they are
    few, and retry chains look them up by it.
    """
    db.execute("alter table tasks add column seq integer")
    db.execute("alter table events add column task_seq integer")
    number_tasks(db)
    db.execute("create unique index idx_tasks_seq on tasks (seq)")
    db.execute("drop index if exists idx_events_task_id_ts")
    db.execute("create index idx_events_task_seq on events (task_seq)")
    db.execute("create index idx_events_task_id_failed on events (task_id) "
               "where signal in ('error', 'locked')")


def number_tasks(conn):
    """Give tasks written without a seq one in rowid order, and link events.

    For stores filled other than through the writer: one upgraded by m003,
    a synthetic one. (``conn``: a sqlite3 connection or sqlite-utils
    Database.)
    """
    conn.execute("update tasks set seq = rowid")
    conn.execute("update events set task_seq = "
                 "(select seq from tasks where tasks.task_id = events.task_id)")


@migrations()
def m004_partial_task_indexes(db):
    """Index tasks by run, wait and run time only once they have them.

    A task row is written when it is enqueued, with none of these set, and
    rewritten when it runs. Full indexes held an entry for each NULL, which
    that rewrite deleted and inserted again; partial ones are written once,
    when the value arrives (the tasks upsert of an execution went from 15.8
    to 11.8 us a task). Every query on these columns compares them or asks
    for ``is not null``, which is what lets SQLite use a partial index.
    ``finished`` stays whole: retry chains walk it newest first, unfinished
    tasks included.
    """
    for columns, where in ((["run_id"], "run_id"),
                           (["duration"], "duration"),
                           (["task", "wait", "finished"], "wait"),
                           (["task", "duration", "finished"], "duration")):
        name = "idx_tasks_" + "_".join(columns)
        db.execute("drop index if exists %s" % name)
        db.execute("create index %s on tasks (%s) where %s is not null" % (
            name, ", ".join(columns), where))


@migrations()
def m005_declared_periodic(db):
    """Consumer runs record the tasks huey's registry declares periodic.

    ``runs.periodic`` is a JSON list of task names (``[]`` for a consumer
    started with ``--no-periodic``). Reports list periodic tasks from it
    instead of guessing from enqueue timing, which also caught retries and
    delayed tasks.
    """
    db.execute("alter table runs add column periodic text")


@migrations()
def m006_store_recreated(db):
    """Runs say when their store was deleted under them, and what went with it.

    A writer that finds its store's path no longer names the file it has
    open (deleted, replaced) creates the store again and restates its run:
    ``store_recreated`` is when, ``events_lost`` how many events it had
    written to the file that is gone (see :class:`hueyscope.events.writer.Store`).
    """
    db.execute("alter table runs add column store_recreated float")
    db.execute("alter table runs add column events_lost integer not null "
               "default 0")


@migrations()
def m007_alerts(db):
    """Alerts a consumer's checks found firing (``consume --check-every``).

    One row per firing rule per check: when, which rule, its one-line
    message, the value it measured and the threshold it crossed, and the
    consumer run that checked.
    """
    db["alerts"].create({
        "id": int, "ts": float, "rule": str, "message": str,
        "value": float, "threshold": float, "run_id": str,
    }, pk="id", not_null={"ts", "rule", "message"})
    db.execute("create index idx_alerts_ts on alerts (ts)")


@migrations()
def m008_task_progress_and_logs(db):
    """What a running task tells: its progress, and its log lines.

    ``task_progress``: the last value of each task that called
    ``hueyscope.progress`` (a fraction from 0 to 1 and a message).
    ``task_logs``: the log records emitted while a task ran, in its thread
    or its worker process, with the attempt they belong to, bounded per
    attempt and by level and redacted as arguments are (see
    :mod:`hueyscope.events.task_logs`).
    """
    db["task_progress"].create({
        "task_id": str, "task": str, "fraction": float, "message": str,
        "ts": float, "run_id": str,
    }, pk="task_id", not_null={"ts"})
    db["task_logs"].create({
        "id": int, "ts": float, "task_id": str, "task": str, "attempt": int,
        "level": str, "levelno": int, "logger": str, "message": str,
        "run_id": str, "pid": int, "worker": str,
    }, pk="id", not_null={"ts", "task_id"})
    db.execute("create index idx_task_logs_task_id on task_logs (task_id)")


# Every migration this version knows; a store listing another one was
# upgraded by a newer hueyscope (see check_event_store).
KNOWN_MIGRATIONS = frozenset(
    m.name for m in migrations.pending(sqlite_utils.Database(memory=True)))
