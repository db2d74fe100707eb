"""Is a file a queue? Checked before anything is created or changed in it."""
import os
import sqlite3

from hueyscope.queue.tables import LEASE_SCHEMA
from hueyscope.readonly import check_schema, read_only, schema_objects

BUSY_TIMEOUT_SECONDS = 10
# Tables a queue file may hold: huey's, ours, SQLite's own.
HUEY_TABLES = frozenset(("kv", "schedule", "task", "counter"))
OUR_PREFIX = "hueyscope_"


def check_sqlite_file(path):
    """Raise ValueError if ``path`` exists but is not a SQLite database.

    Reads the 16-byte header only, so a foreign file is never touched.
    """
    try:
        with open(path, "rb") as f:
            header = f.read(16)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ValueError("cannot read %s: %s" % (path, exc.strerror))
    if header and header != b"SQLite format 3\x00":
        raise ValueError("%s is not a SQLite database" % path)


def check_queue_file(path):
    """Raise ValueError (one line) unless ``path`` is a queue, empty or absent.

    Opens the file read-only, so a foreign database is left byte for byte as
    it was: huey would otherwise add its tables to it and switch it to WAL.
    A lease schema newer than this code is refused the same way.
    """
    if path == ":memory:" or not os.path.exists(path):
        return
    if os.path.isdir(path):
        raise ValueError("queue %s is a folder, not a SQLite file" % path)
    check_sqlite_file(path)
    if os.path.getsize(path) == 0:
        return
    # Read-only, leaving not even a -wal or -shm file next to a database
    # that is not ours (see hueyscope.readonly).
    try:
        tables, lease_schema = read_only(
            path, lambda conn: _tables_and_lease_schema(conn, path),
            timeout=BUSY_TIMEOUT_SECONDS)
    except sqlite3.Error as exc:
        raise ValueError("cannot read queue %s: %s" % (path, exc))
    foreign = sorted(t for t in tables if t not in HUEY_TABLES
                     and not t.startswith(OUR_PREFIX)
                     and not t.startswith("sqlite_"))
    if foreign:
        what = "an event store" if {"events", "runs"} <= tables else \
            "a SQLite database"
        raise ValueError("%s is %s, not a huey queue (it has table%s %s); "
                         "left unchanged" % (path, what, "s" if len(foreign) > 1
                                             else "", ", ".join(foreign[:5])))
    if lease_schema is not None and int(lease_schema) > LEASE_SCHEMA:
        raise ValueError(
            "queue %s has lease schema %s, newer than this hueyscope "
            "(%d): upgrade hueyscope; left unchanged" % (
                path, lease_schema, LEASE_SCHEMA))


def check_queue_schema(conn, path):
    """Raise ValueError (one line) if the queue file's schema is not ours.

    huey's tables and ours must be plain tables (an index of ours is an
    index), and neither huey nor hueyscope puts a view or a trigger in a
    queue: one found there came with the file, and is refused before
    anything reads or writes it (see :func:`hueyscope.readonly.check_schema`).
    """
    expected = {name: "table" for name in HUEY_TABLES}
    for kind, name, _ in schema_objects(conn):
        if name.startswith(OUR_PREFIX):
            expected[name] = "index" if kind == "index" else "table"
    check_schema(conn, "queue %s" % path, expected,
                 no_generated=sorted(n for n, k in expected.items()
                                     if k == "table"))


def _tables_and_lease_schema(conn, path):
    """(table names, lease schema version or None) of an open queue file."""
    check_queue_schema(conn, path)
    tables = {row[0] for row in conn.execute(
        "select name from sqlite_master where type = 'table'")}
    row = None
    if "hueyscope_meta" in tables:
        row = conn.execute("select value from hueyscope_meta "
                           "where key = 'lease_schema'").fetchone()
    return tables, row[0] if row else None


