"""Crafted SQLite files: an event store or a queue turned hostile.

Each crafter takes a sqlite3 connection to a copy of a real file and changes
it the way someone handing over a store could: a table replaced by a view
that never ends, a trigger that writes when rows are deleted, a value of
many megabytes, text that is not UTF-8. :data:`STORE_CRAFTS` and
:data:`QUEUE_CRAFTS` name them; :func:`craft` applies one to a copy.
"""
import hashlib
import sqlite3
from pathlib import Path

# A SELECT that never ends.
NEVER_ENDING = ("with recursive c(x) as (select 1 union all select x + 1 "
                "from c) select x from c")
# Size of the big value (the was 200 MB; 50 MB keeps tests fast).
BIG = 50 * 1000 * 1000


def _replace_by_view(conn, table, body):
    """Rename ``table`` away and put a view of the same name in its place."""
    conn.execute("alter table %s rename to %s_real" % (table, table))
    conn.execute("create view %s as %s" % (table, body))


def never_ending_migrations(conn):
    """``_sqlite_migrations`` a recursive view with the columns read from it."""
    conn.execute("drop table _sqlite_migrations")
    conn.execute("create view _sqlite_migrations as select 'hueyscope' as "
                 "migration_set, 'm%%07d' || x as name, x as applied_at "
                 "from (%s)" % NEVER_ENDING)


def tasks_view(conn):
    """``tasks`` a view over the real rows, repeated for ever."""
    _replace_by_view(conn, "tasks", "select t.* from (%s) c, tasks_real t"
                     % NEVER_ENDING)


def foreign_trigger(conn):
    """A trigger that writes an alert whenever an event is deleted."""
    conn.execute("create trigger planted before delete on events begin "
                 "insert into alerts (ts, rule, message) values "
                 "(0, 'planted', 'a trigger of the file ran'); end")


def big_value(conn):
    """One run's host and one error :data:`BIG` bytes long (columns no
    index repeats, so the file grows by twice that only)."""
    conn.execute("update runs set host = printf('%%.*c', %d, 'x') where "
                 "rowid = (select min(rowid) from runs)" % BIG)
    conn.execute("update events set error = printf('%%.*c', %d, 'x') where "
                 "id = (select min(id) from events where signal = 'error')"
                 % BIG)


def invalid_utf8(conn):
    """A task name and an error holding a byte that is not UTF-8."""
    conn.execute("update tasks set task = cast(x'ff6e616d65' as text) where "
                 "rowid = (select min(rowid) from tasks)")
    conn.execute("update events set error = cast(x'6fff6b' as text) where "
                 "signal = 'error'")


STORE_CRAFTS = {
    "never_ending_migrations": never_ending_migrations,
    "tasks_view": tasks_view,
    "foreign_trigger": foreign_trigger,
    "big_value": big_value,
    "invalid_utf8": invalid_utf8,
}


def queue_never_ending(conn):
    """huey's ``task`` table a view that never ends."""
    _replace_by_view(conn, "task", "select t.* from (%s) c, task_real t"
                     % NEVER_ENDING)


def queue_trigger(conn):
    """A trigger that writes when a task is taken off the queue."""
    conn.execute("create trigger planted before delete on task begin "
                 "insert into kv (queue, key, value) values "
                 "('x', 'planted', x'00'); end")


def queue_big_value(conn):
    conn.execute("update task set queue = printf('%%.*c', %d, 'x') where "
                 "id = (select min(id) from task)" % BIG)


def queue_invalid_utf8(conn):
    conn.execute("update task set queue = cast(x'71ff' as text)")


QUEUE_CRAFTS = {
    "never_ending_migrations": queue_never_ending,
    "tasks_view": queue_never_ending,
    "foreign_trigger": queue_trigger,
    "big_value": queue_big_value,
    "invalid_utf8": queue_invalid_utf8,
}


def craft(source, dest, crafter):
    """A copy of the SQLite file ``source`` at ``dest``, changed by ``crafter``;
    one file (rollback journal, no -wal beside it)."""
    src = sqlite3.connect("file:%s?mode=ro" % source, uri=True)
    conn = sqlite3.connect(str(dest), isolation_level=None)
    src.backup(conn)
    src.close()
    conn.execute("pragma journal_mode = delete")
    conn.execute("begin")
    crafter(conn)
    conn.execute("commit")
    conn.close()
    return Path(dest)


def digest(path):
    """SHA-256 of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
