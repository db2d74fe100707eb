"""Opening the event store's file with the standard library alone.

:mod:`hueyscope.events.schema` needs sqlite-utils for its migrations, and
importing sqlite-utils is most of a writer process's start (about a tenth of
a second, which a short-lived producer waits for at its exit). A store whose
migrations are all applied needs none of it: :func:`open_current` opens such
a store with sqlite3 alone, and says None for any other file, which then
goes through :func:`hueyscope.events.schema.open_event_store`.
"""
import os
import sqlite3
import time

from hueyscope import filemodes

MIGRATIONS_TABLE = "_sqlite_migrations"  # sqlite-utils' record of migrations
MIGRATION_SET = "hueyscope"


def connect(path, timeout=30):
    """A sqlite3 connection tuned for the event store: WAL, NORMAL sync.

    NORMAL is safe here: in WAL mode a killed process loses nothing that was
    committed; only a power cut may lose the last commits of history.
    A store that does not exist yet is created owner-only, and its -wal and
    -shm with it (see :mod:`hueyscope.filemodes`).
    """
    filemodes.create_private(path)
    conn = sqlite3.connect(path, timeout=timeout, check_same_thread=False)
    conn.execute("pragma busy_timeout=%d" % int(timeout * 1000))
    # Switching a new file to WAL upgrades a read lock to a write lock, and
    # SQLite answers BUSY at once rather than wait when another process
    # holds one too: retry, as huey's own storage does.
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("pragma journal_mode=wal")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                conn.close()
                raise
            time.sleep(0.01)
    conn.execute("pragma synchronous=normal")
    return conn


def open_current(path, names):
    """A connection (see :func:`connect`) to the event store at ``path`` if
    every migration in ``names`` is applied to it, else None."""
    if not names or not os.path.isfile(path):
        return None
    try:
        conn = connect(path)
    except sqlite3.Error:
        return None
    try:
        applied = {row[0] for row in conn.execute(
            "select name from %s where migration_set = ?" % MIGRATIONS_TABLE,
            (MIGRATION_SET,))}
    except sqlite3.Error:  # not a SQLite file, no migrations table yet
        applied = set()
    if applied.issuperset(names):
        return conn
    conn.close()
    return None
