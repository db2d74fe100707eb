"""Read a SQLite file without leaving a trace of having read it, and
without letting the file run anything.

Checks that refuse a file (a queue that is an event store, an event store
from a newer hueyscope, a database that is not ours) must leave it exactly as
it was. A plain ``mode=ro`` connection to a WAL database that nobody has open
creates ``-wal`` and ``-shm`` files beside it and, being read-only, cannot
delete them again. With no ``-wal`` beside the file there is nothing but the
main file to read, so it is opened ``immutable``, which creates nothing.

Files come from elsewhere too (stores copied from other hosts), and a SQLite
file carries code: views, triggers, generated columns. Every connection a
reader opens is :func:`guard`-ed: each query has a time limit, each value a
size limit, undecodable text is shown replaced, ``fts3_tokenizer()`` and
``load_extension()`` are refused, and no trigger of the file may write. :func:`check_schema`
refuses, before anything is read, a file whose tables are not tables or
that holds views or triggers hueyscope did not create.
"""
import os
import sqlite3
import threading
import time
from urllib.parse import quote

# A value longer than this (bytes) is not read at all: SQLite refuses it
# ("string or blob too big") before loading it, so a crafted 200 MB row
# costs no memory. hueyscope writes nothing near it (errors are cut at 4,000
# characters, tracebacks at 20,000).
MAX_VALUE_BYTES = 1 << 20
# Text longer than this (bytes) is shown cut, with a mark saying so.
SHOWN_VALUE_BYTES = 64 << 10
# Seconds one query may run before it is stopped (see :func:`guard`).
QUERY_SECONDS = 60.0
# SQLite virtual machine steps between two looks at the clock.
_STEPS = 10_000

_stop = threading.Event()


class QueryStopped(sqlite3.OperationalError):
    """A query stopped by its time limit or by :func:`stop_queries`."""


def sqlite_uri(path, query):
    """The SQLite ``file:`` URI of ``path`` with ``query`` (``mode=ro``...).

    Every path that goes into a URI goes through here. The absolute path is
    percent-encoded, so that a ``#`` or ``?`` in a name is part of the name
    rather than the end of it (``dir/a#b.db`` would otherwise open
    ``dir/a``), a ``%`` stands for itself, and any name the filesystem
    holds (bytes that are not UTF-8 too) reaches SQLite as it is.
    """
    return "file:%s?%s" % (quote(os.fsencode(os.path.abspath(path))), query)


def read_only(path, read, timeout=10, seconds=QUERY_SECONDS):
    """``read(conn)`` on a read-only, :func:`guard`-ed connection to ``path``;
    returns its result.

    Raises sqlite3.Error as sqlite3 does (:class:`QueryStopped` for a query
    that ran longer than ``seconds``). If another process starts writing
    the file while it is read immutable (a checkpoint may then change pages
    under the reader), the read is done again through a normal read-only
    connection: the files that leaves behind are that process's anyway.
    """
    modes = ["mode=ro"]
    if not os.path.exists(path + "-wal"):
        modes.insert(0, "immutable=1")
    for i, mode in enumerate(modes):
        conn = connect(sqlite_uri(path, mode), seconds, uri=True,
                       timeout=timeout)
        try:
            return read(conn)
        except QueryStopped:
            raise
        except sqlite3.DatabaseError:
            if i + 1 == len(modes) or not os.path.exists(path + "-wal"):
                raise
        finally:
            conn.close()


def table_names(path, timeout=10):
    """The names of the tables in the SQLite file at ``path``, read-only."""
    return read_only(path, lambda conn: {row[0] for row in conn.execute(
        "select name from sqlite_master where type = 'table'")}, timeout)


# -- guarded connections --------------------------------------------------

class Limit:
    """The time limit of one connection's queries: its progress handler.

    ``arm()`` restarts it (a :class:`GuardedConnection` does, at each
    statement); ``why`` says what stopped the last query, if anything did.
    """

    def __init__(self, seconds):
        self.seconds = seconds
        self.arm()

    def arm(self):
        self.why = None
        self.deadline = (None if self.seconds is None
                         else time.monotonic() + self.seconds)

    def __call__(self):
        if _stop.is_set():
            self.why = "stopped (a signal asked to stop)"
            return 1
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.why = ("a query ran longer than %g s, the limit; is this a "
                        "crafted or damaged file?" % self.seconds)
            return 1
        return 0

    def explain(self, exc):
        """A :class:`QueryStopped` saying why, if ``exc`` is this limit's
        interruption; else ``exc``."""
        if self.why is not None and not isinstance(exc, QueryStopped) and \
                isinstance(exc, sqlite3.OperationalError) and \
                "interrupt" in str(exc):
            return QueryStopped(self.why)
        return exc


class GuardedConnection(sqlite3.Connection):
    """A sqlite3 connection whose every statement gets the time limit anew.

    Made by :func:`connect`; :func:`guard` sets the limit. Errors from a
    stopped query say why it was stopped (:class:`QueryStopped`).
    """

    limit = None

    def arm(self):
        if self.limit is not None:
            self.limit.arm()

    # sqlite3's own execute() makes a plain cursor: these make a guarded one.
    def execute(self, *args):
        return self.cursor().execute(*args)

    def executemany(self, *args):
        return self.cursor().executemany(*args)

    def executescript(self, *args):
        self.arm()
        return _explained(self, super().executescript, *args)

    def cursor(self, factory=None):
        return super().cursor(factory or GuardedCursor)


class GuardedCursor(sqlite3.Cursor):
    """A cursor of a :class:`GuardedConnection`: fetches explain a stop too."""

    def execute(self, *args):
        self.connection.arm()
        return _explained(self.connection, super().execute, *args)

    def executemany(self, *args):
        self.connection.arm()
        return _explained(self.connection, super().executemany, *args)

    def fetchone(self):
        return _explained(self.connection, super().fetchone)

    def fetchmany(self, *args):
        return _explained(self.connection, super().fetchmany, *args)

    def fetchall(self):
        return _explained(self.connection, super().fetchall)

    def __next__(self):
        return _explained(self.connection, super().__next__)


def _explained(conn, call, *args):
    try:
        return call(*args)
    except sqlite3.Error as exc:
        better = explain(exc, conn.limit)
        if better is exc:
            raise
        raise better from None


def explain(exc, limit=None):
    """``exc`` (a sqlite3.Error) said plainly if a guard caused it: a
    :class:`QueryStopped` saying why ``limit`` stopped the query, a value
    over :data:`MAX_VALUE_BYTES`; else ``exc`` itself."""
    if isinstance(exc, sqlite3.DataError) and "too big" in str(exc):
        return sqlite3.DataError(
            "a value is over %d bytes, longer than any hueyscope writes; is "
            "this a crafted or damaged file?" % MAX_VALUE_BYTES)
    if limit is not None:
        return limit.explain(exc)
    return exc


def connect(database, seconds=QUERY_SECONDS, **kwargs):
    """A :class:`GuardedConnection` to ``database``, :func:`guard`-ed."""
    conn = sqlite3.connect(database, factory=GuardedConnection, **kwargs)
    guard(conn, seconds)
    return conn


def guard(conn, seconds=QUERY_SECONDS):
    """Make ``conn`` safe to read a file from elsewhere with; its :class:`Limit`.

    - Each query may run ``seconds`` (None: no limit), counted from the
      start of each statement of a :class:`GuardedConnection`, else from
      each ``Limit.arm()``; every query stops at once after
      :func:`stop_queries`.
    - No value over :data:`MAX_VALUE_BYTES` is read (an error instead);
      text over :data:`SHOWN_VALUE_BYTES` is cut (:func:`shown_text`), and
      invalid UTF-8 shown replaced rather than failing the read.
    - The authorizer (:func:`authorizer`) refuses :data:`DENIED_FUNCTIONS`
      and any write a trigger of the file would do.
    - ``trusted_schema`` off: a view or trigger may not call functions with
      side effects nor use virtual tables.
    """
    limit = Limit(seconds)
    if isinstance(conn, GuardedConnection):
        conn.limit = limit
    conn.set_progress_handler(limit, _STEPS)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    conn.text_factory = shown_text
    conn.set_authorizer(authorizer())
    conn.execute("pragma trusted_schema = off")
    return limit


def stop_queries():
    """Stop every guarded query under way, and any started after (SIGTERM)."""
    _stop.set()


def stopping():
    """True once :func:`stop_queries` was called."""
    return _stop.is_set()


def shown_text(data):
    """A text value as shown: invalid UTF-8 replaced, cut past
    :data:`SHOWN_VALUE_BYTES` with a mark saying how much was left out."""
    if len(data) > SHOWN_VALUE_BYTES:
        return "%s…[truncated: %d bytes not shown]" % (
            data[:SHOWN_VALUE_BYTES].decode("utf-8", "replace"),
            len(data) - SHOWN_VALUE_BYTES)
    return data.decode("utf-8", "replace")


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


# Actions a trigger's body would take: a statement that would fire a
# trigger of the file fails to prepare instead.
_WRITES = frozenset((sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE,
                     sqlite3.SQLITE_DELETE))


def authorizer():
    """A sqlite3 authorizer for files from elsewhere: :func:`authorize`'s
    refusals, and any write done by a trigger (SQLite names the trigger as
    the source; a view or a WITH clause cannot write)."""
    def guarded(action, arg1, arg2, database, source):
        if source is not None and action in _WRITES:
            return sqlite3.SQLITE_DENY
        return authorize(action, arg1, arg2, database, source)

    return guarded


# -- whose schema is it ---------------------------------------------------

class ForeignSchema(ValueError):
    """A file whose schema objects are not the ones hueyscope creates."""


def schema_objects(conn, schema="main"):
    """(type, name, sql) of every object in ``schema``'s sqlite_master.

    Reading sqlite_master runs nothing of the file: views and triggers are
    only parsed.
    """
    return conn.execute("select type, name, sql from %s.sqlite_master"
                        % schema).fetchall()


def check_schema(conn, what, expected, schema="main", no_generated=()):
    """Raise :class:`ForeignSchema` (one line) unless the schema is ours.

    ``expected``: {name: type} of what hueyscope creates in such a file
    (tables, indexes). Each of those names present must be of that type
    (a table a plain table, not a virtual one); a view or trigger not
    expected is refused; other tables and indexes are let be (sqlite_stat1,
    a user's own). The columns of the tables in ``no_generated`` may not be
    generated (computed by the file's own expression when read). ``what``
    names the file in the message.
    """
    found = {}
    for kind, name, sql in schema_objects(conn, schema):
        found[name] = kind
        want = expected.get(name)
        if want is None:
            if kind in ("view", "trigger"):
                raise ForeignSchema(
                    "%s has a %s hueyscope did not create (%s): not read, "
                    "left unchanged" % (what, kind, name))
            continue
        if kind != want:
            raise ForeignSchema(
                "%s: %s is %s where %s belongs: not read, left "
                "unchanged" % (what, name, _a(kind), _a(want)))
        if kind == "table" and (sql or "").lstrip()[:13].upper() != "CREATE TABLE ":
            raise ForeignSchema(
                "%s: %s is not a plain table (%s...): not read, left "
                "unchanged" % (what, name, " ".join((sql or "").split()[:4])))
    for table in no_generated:
        if found.get(table) != "table":
            continue
        for row in conn.execute("pragma %s.table_xinfo(%s)" % (
                schema, _quoted(table))):
            if row[6] in (2, 3):  # hidden: 2 virtual, 3 stored generated
                raise ForeignSchema(
                    "%s: column %s.%s is computed by the file (a generated "
                    "column hueyscope does not create): not read, left "
                    "unchanged" % (what, table, row[1]))


def _a(kind):
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def _quoted(name):
    return '"%s"' % name.replace('"', '""')
