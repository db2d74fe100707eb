"""Read a SQLite file without leaving a trace of having read it.

Checks that refuse a file (a queue that is an event store, an event store
from a newer hueyscope, a database that is not ours) must leave it exactly as
it was. A plain ``mode=ro`` connection to a WAL database that nobody has open
creates ``-wal`` and ``-shm`` files beside it and, being read-only, cannot
delete them again. With no ``-wal`` beside the file there is nothing but the
main file to read, so it is opened ``immutable``, which creates nothing.
"""
import os
import sqlite3
from urllib.parse import quote


def sqlite_uri(path, query):
    """The SQLite ``file:`` URI of ``path`` with ``query`` (``mode=ro``...).

    Every path that goes into a URI goes through here. The absolute path is
    percent-encoded, so that a ``#`` or ``?`` in a name is part of the name
    rather than the end of it (``dir/a#b.db`` would otherwise open
    ``dir/a``), a ``%`` stands for itself, and any name the filesystem
    holds (bytes that are not UTF-8 too) reaches SQLite as it is.
    """
    return "file:%s?%s" % (quote(os.fsencode(os.path.abspath(path))), query)


def read_only(path, read, timeout=10):
    """``read(conn)`` on a read-only connection to ``path``; returns its result.

    Raises sqlite3.Error as sqlite3 does. If another process starts writing
    the file while it is read immutable (a checkpoint may then change pages
    under the reader), the read is done again through a normal read-only
    connection: the files that leaves behind are that process's anyway.
    """
    modes = ["mode=ro"]
    if not os.path.exists(path + "-wal"):
        modes.insert(0, "immutable=1")
    for i, mode in enumerate(modes):
        conn = sqlite3.connect(sqlite_uri(path, mode), uri=True, timeout=timeout)
        try:
            return read(conn)
        except sqlite3.DatabaseError:
            if i + 1 == len(modes) or not os.path.exists(path + "-wal"):
                raise
        finally:
            conn.close()


def table_names(path, timeout=10):
    """The names of the tables in the SQLite file at ``path``, read-only."""
    return read_only(path, lambda conn: {row[0] for row in conn.execute(
        "select name from sqlite_master where type = 'table'")}, timeout)


# SQL functions no reader of a store needs and that are unsafe on input
# chosen by someone else: fts3_tokenizer() with one argument returns a
# pointer into libsqlite3 and with two installs one (a crash, or worse);
# load_extension() loads native code. Compared in lower case.
DENIED_FUNCTIONS = frozenset({"fts3_tokenizer", "load_extension"})


def authorize(action, arg1, arg2, database, trigger):
    """A ``set_authorizer`` callback that denies :data:`DENIED_FUNCTIONS`.

    For ``SQLITE_FUNCTION`` SQLite gives the function's name as the third
    argument; every other action (reads, pragmas, selects...) is allowed
    here, since what a connection may change is settled by opening it
    read-only, not by this callback.
    """
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def deny_dangerous(conn):
    """Make ``conn`` refuse :data:`DENIED_FUNCTIONS`; returns ``conn``.

    A statement calling one fails to prepare with ``sqlite3.DatabaseError:
    not authorized``. Extension loading stays as sqlite3 leaves it: off.
    """
    conn.set_authorizer(authorize)
    return conn
