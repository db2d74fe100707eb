"""One read-only connection over one or more event stores.

Several event stores (one per host) merge into one report: they are attached
to one connection and read through temporary views; task rows seen by more
than one host (enqueued on one, executed on another) are merged into one row.
SQLite attaches at most ten files to a connection (its build's limit, often
ten): past that, the stores are copied one at a time into temporary tables
instead (:meth:`Store._copy`), so any number can be read.

The connection is guarded (:func:`hueyscope.readonly.guard`): each query
may run ``query_seconds``, no value over a megabyte is read, undecodable
text is shown replaced; and each file's schema is checked to be ours
(:func:`hueyscope.events.schema.check_store`) inside the read transaction, before
anything else is read from it.
"""
import sqlite3

from hueyscope import readonly
from hueyscope.events import queries
from hueyscope.events.schema import INDEXES, check_store, database_names
from hueyscope.readonly import sqlite_uri
from hueyscope.settings import configured_redaction

# Asked of SQLite, which gives no more than its build allows.
MOST_ATTACHED = 125
# Tables read through the union of every store (tasks are merged apart).
UNION_TABLES = ("events", "runs", "queue_samples", "rollup_hourly")

TASK_COLUMNS = ("task_id", "task", "queue", "status", "enqueued", "ready",
                "started", "finished", "attempts", "wait", "duration",
                "error_type", "error", "fingerprint", "priority", "eta",
                "parent_id", "run_id", "updated")
# Columns of text a task gave or raised, redacted again when read.
SHOWN_TEXT = frozenset(("error", "example_error", "traceback", "reason",
                        "args", "kwargs"))


class Store:
    """One read-only connection over one or more event stores.

    With one file, queries run on it directly (its indexes serve them). With
    several, each file is attached and the tables are read through temporary
    views of the same names, so the named queries run unchanged.
    """

    def __init__(self, sources, query_seconds=readonly.QUERY_SECONDS):
        self.sources = [str(s) for s in sources]
        self.redaction = configured_redaction()
        self.names = database_names(self.sources)
        self.merged = len(self.sources) > 1
        if not self.merged:
            self.conn = readonly.connect(
                sqlite_uri(self.sources[0], "mode=ro"), query_seconds,
                uri=True, isolation_level=None)
        else:
            self.conn = readonly.connect("file::memory:", query_seconds,
                                         uri=True, isolation_level=None)
        try:
            self.conn.execute("pragma busy_timeout = 30000")
            if self.merged and len(self.sources) > self._most_attached():
                self._copy()
            # One read transaction: every page sees the same snapshot even
            # while a consumer keeps writing.
            self.conn.execute("begin")
            if not self.merged:
                check_store(self.conn, self.sources[0])
            elif not hasattr(self, "schemas"):
                self._attach()
            if self.merged:
                self._merge_tasks()
        except BaseException:
            self.conn.close()
            raise

    def _most_attached(self):
        """How many files this connection may attach (SQLite's build caps it)."""
        self.conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, MOST_ATTACHED)
        return self.conn.getlimit(sqlite3.SQLITE_LIMIT_ATTACHED)

    def _attach(self):
        """Attach every store and read it through temporary views."""
        conn = self.conn
        schemas = []
        for i, (path, name) in enumerate(zip(self.sources, self.names)):
            schema = "s%d" % i
            conn.execute("attach database ? as %s" % schema,
                         (sqlite_uri(path, "mode=ro"),))
            check_store(conn, path, schema)
            schemas.append(schema)

        def union(table):
            return " union all ".join(
                "select *, %s as _db from %s.%s" % (
                    _sql_string(name), schema, table)
                for schema, name in zip(schemas, self.names))

        for table in UNION_TABLES:
            conn.execute("create temp view _all_%s as %s" % (table, union(table)))
        self._views("_all_")
        self.schemas = schemas

    def _copy(self):
        """Copy every store, one attached at a time, into temporary tables.

        For more stores than SQLite may attach at once. The copies hold
        what the report reads (a temporary file of SQLite's, gone with the
        connection), with the indexes the queries use.
        """
        conn = self.conn
        for i, (path, name) in enumerate(zip(self.sources, self.names)):
            conn.execute("attach database ? as src",
                         (sqlite_uri(path, "mode=ro"),))
            # Each store's tables from one snapshot of it; detached after.
            conn.execute("begin")
            try:
                check_store(conn, path, "src")
                for table in UNION_TABLES + ("tasks",):
                    if i == 0:
                        conn.execute(
                            "create temp table _copy_%s as select *, '' as _db "
                            "from src.%s where 0" % (table, table))
                    conn.execute("insert into temp._copy_%s select *, %s "
                                  "from src.%s" % (table, _sql_string(name),
                                                   table))
                conn.execute("commit")
            finally:
                if conn.in_transaction:
                    conn.execute("rollback")
                conn.execute("detach database src")
        for table, columns, _ in INDEXES:
            if table in UNION_TABLES:
                conn.execute("create index temp._copy_%s_%s on _copy_%s (%s)" % (
                    table, "_".join(columns), table, ", ".join(columns)))
        conn.execute("create index temp._copy_events_task_id on _copy_events "
                     "(task_id)")
        self._views("_copy_")
        self.schemas = ["temp"]

    def _views(self, prefix):
        """The temporary views the named queries read, over ``prefix`` tables."""
        conn = self.conn
        for table in ("events", "runs", "queue_samples"):
            conn.execute("create temp view %s as select * from %s%s"
                         % (table, prefix, table))
        conn.execute(
            "create temp view rollup_hourly as select hour, task, signal, "
            "sum(count) as count, sum(duration_sum) as duration_sum, "
            "max(duration_max) as duration_max, sum(wait_sum) as wait_sum "
            "from %srollup_hourly group by hour, task, signal" % prefix)

    def _tasks_union(self):
        if getattr(self, "schemas", None) == ["temp"]:
            return "select * from _copy_tasks"
        return " union all ".join(
            "select *, %s as _db from %s.tasks" % (_sql_string(name), schema)
            for schema, name in zip(self.schemas, self.names))

    def _merge_tasks(self):
        conn = self.conn
        # A task enqueued on one host and executed on another has a row in
        # each store. Copy every row, then fold the (usually few) task ids
        # seen twice into their newest row, with the earliest enqueue, the
        # pipeline parent and the attempts of all hosts.
        columns = ", ".join(TASK_COLUMNS)
        conn.execute("create temp table tasks as select %s, _db from (%s)"
                     % (columns, self._tasks_union()))
        if self.schemas == ["temp"]:
            conn.execute("drop table temp._copy_tasks")
        conn.execute("create index temp.tasks_task_id on tasks (task_id)")
        conn.execute(
            "create temp table _twice as select task_id, min(enqueued) as enq, "
            "max(parent_id) as parent, sum(attempts) as tries, "
            "(select t.rowid from tasks t where t.task_id = d.task_id "
            " order by t.updated desc limit 1) as keep "
            "from tasks d group by task_id having count(*) > 1")
        conn.execute(
            "delete from tasks where task_id in (select task_id from _twice) "
            "and rowid not in (select keep from _twice)")
        conn.execute(
            "update tasks set enqueued = d.enq, parent_id = d.parent, "
            "attempts = d.tries from _twice d where tasks.rowid = d.keep")
        for columns in (("status",), ("task", "finished"), ("finished",),
                        ("enqueued",), ("run_id",), ("parent_id",),
                        ("fingerprint",), ("duration",),
                        ("task", "wait", "finished"),
                        ("task", "duration", "finished")):
            conn.execute("create index temp.tasks_%s on tasks (%s)" % (
                "_".join(columns), ", ".join(columns)))

    def query(self, name, **params):
        """Run a named query from hueyscope.events.queries."""
        return self._shown(queries.run(self.conn, name, **params))

    def rows(self, sql, *params):
        cursor = self.conn.execute(sql, params)
        columns = [d[0] for d in cursor.description]
        return self._shown([dict(zip(columns, row)) for row in cursor.fetchall()])

    def _shown(self, rows):
        """``rows`` with their error text and arguments redacted again.

        The recorder stores them redacted; a store written by an earlier
        version, or with a shorter key list, is redacted on the way out.
        """
        if rows:
            scrub = self.redaction.text
            for row in rows:
                for column in SHOWN_TEXT.intersection(row):
                    row[column] = scrub(row[column])
        return rows

    def one(self, sql, *params):
        rows = self.rows(sql, *params)
        return rows[0] if rows else {}

    def db_of(self, table, key, value):
        """Which file (Datasette database name) a row comes from."""
        if not self.merged:
            return self.names[0]
        row = self.conn.execute(
            "select _db from %s where %s = ? limit 1" % (table, key),
            (value,)).fetchone()
        return row[0] if row else self.names[0]

    def close(self):
        try:
            self.conn.execute("rollback")
        finally:
            self.conn.close()


def _sql_string(text):
    return "'%s'" % text.replace("'", "''")

