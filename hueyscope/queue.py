"""Settings -> Huey instance.

The embedded default is huey's SQLite storage in WAL mode with a busy
timeout. ``durability`` picks SQLite's synchronous mode: FULL syncs the WAL on
every commit and survives power loss; NORMAL syncs only at checkpoints, which
is several times faster on slow disks and may lose the last commits on power
loss, but never corrupts the file (a killed process loses nothing either way).
huey's own ``fsync`` flag only knows FULL and OFF, hence the small subclass.
"""
import os
import sqlite3

from huey import PriorityRedisHuey, SqliteHuey
from huey.storage import SqliteStorage

from hueyscope.periodic import TICK_DDL, OncePerTick, enqueue_unclaimed
from hueyscope.readonly import read_only

QUEUE_NAME = "hueyscope"
POSTGRES_SCHEMES = ("postgresql", "postgres")
BUSY_TIMEOUT_SECONDS = 10
SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL"}


# Tables a queue file may hold: huey's, ours, SQLite's own.
HUEY_TABLES = frozenset(("kv", "schedule", "task", "counter"))
OUR_PREFIX = "hueyscope_"


class DurableSqliteStorage(SqliteStorage):
    """SqliteStorage with an explicit synchronous mode (FULL or NORMAL).

    Refuses a file that is not a queue before huey creates its tables in it
    (see :func:`check_queue_file`). Holds the claims that run each periodic
    task once per tick (see :mod:`hueyscope.periodic`).
    """

    ddl = SqliteStorage.ddl + [TICK_DDL]
    enqueue_unclaimed = enqueue_unclaimed

    def __init__(self, *args, synchronous="FULL", **kwargs):
        self.synchronous = synchronous
        check_queue_file(kwargs.get("filename") or (args[1] if len(args) > 1
                                                   else "huey.db"))
        super().__init__(*args, **kwargs)

    def _create_connection(self):
        conn = super()._create_connection()
        conn.execute("pragma synchronous=%s" % self.synchronous)
        return conn


class DurableSqliteHuey(OncePerTick, SqliteHuey):
    """huey's SqliteHuey (at-most-once) on DurableSqliteStorage."""

    storage_class = DurableSqliteStorage


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
    from hueyscope.leases import LEASE_SCHEMA

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
        tables, lease_schema = read_only(path, _tables_and_lease_schema,
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


def _tables_and_lease_schema(conn):
    """(table names, lease schema version or None) of an open queue file."""
    tables = {row[0] for row in conn.execute(
        "select name from sqlite_master where type = 'table'")}
    row = None
    if "hueyscope_meta" in tables:
        row = conn.execute("select value from hueyscope_meta "
                           "where key = 'lease_schema'").fetchone()
    return tables, row[0] if row else None


def make_huey(settings, name=QUEUE_NAME, **huey_kwargs):
    """Build the Huey instance the settings describe.

    SQLite queues are leased (at-least-once, :class:`hueyscope.SqliteHuey`)
    unless the settings ask for at-most-once delivery, huey's own behaviour.
    """
    if settings.queue_scheme == "redis":
        return PriorityRedisHuey(name, url=settings.queue, **huey_kwargs)
    if settings.queue_scheme in POSTGRES_SCHEMES:
        from hueyscope.postgres import make_postgres_huey

        return make_postgres_huey(
            name, settings.queue, leased=settings.delivery == "at-least-once",
            **huey_kwargs)
    path = settings.queue_path
    check_sqlite_file(path)
    if settings.delivery == "at-least-once":
        from hueyscope.leases import SqliteHuey as huey_class
    else:
        huey_class = DurableSqliteHuey
    return huey_class(
        name,
        filename=path,
        journal_mode="wal",
        timeout=BUSY_TIMEOUT_SECONDS,
        synchronous=SYNCHRONOUS[settings.durability],
        utc=True,
        **huey_kwargs,
    )


def open_queue(huey):
    """Open the queue's storage now, turning failures into one-line ValueErrors.

    huey connects lazily; a command calls this first so an unwritable path or
    a damaged file is reported before any work starts.
    """
    try:
        huey.storage.queue_size()
    except sqlite3.DatabaseError as exc:
        raise ValueError("cannot open queue %s: %s" % (
            getattr(huey.storage, "filename", huey.name), exc))
    except Exception as exc:  # redis.ConnectionError and friends
        raise ValueError("cannot open queue %s: %s" % (huey.name, exc))
