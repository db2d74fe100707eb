"""One read-only connection over one or more event stores.

Several event stores (one per host) merge into one report: they are attached
to one connection and read through temporary views; task rows seen by more
than one host (enqueued on one, executed on another) are merged into one row.
"""
import sqlite3

from hueyscope.events import queries
from hueyscope.events.schema import database_names
from hueyscope.readonly import sqlite_uri
from hueyscope.settings import configured_redaction

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

    def __init__(self, sources):
        self.sources = [str(s) for s in sources]
        self.redaction = configured_redaction()
        self.names = database_names(self.sources)
        self.merged = len(self.sources) > 1
        if not self.merged:
            self.conn = sqlite3.connect(
                sqlite_uri(self.sources[0], "mode=ro"),
                uri=True, isolation_level=None)
        else:
            self.conn = sqlite3.connect("file::memory:", uri=True,
                                        isolation_level=None)
        self.conn.execute("pragma busy_timeout = 30000")
        # One read transaction: every page sees the same snapshot even while
        # a consumer keeps writing.
        self.conn.execute("begin")
        if self.merged:
            self._merge()

    def _merge(self):
        conn = self.conn
        schemas = []
        for i, path in enumerate(self.sources):
            schema = "s%d" % i
            conn.execute("attach database ? as %s" % schema,
                         (sqlite_uri(path, "mode=ro"),))
            schemas.append(schema)

        def union(table, extra=""):
            return " union all ".join(
                "select *%s, %s as _db from %s.%s" % (
                    extra, _sql_string(name), schema, table)
                for schema, name in zip(schemas, self.names))

        for table in ("events", "runs", "queue_samples"):
            conn.execute("create temp view %s as %s" % (table, union(table)))
        conn.execute(
            "create temp view rollup_hourly as select hour, task, signal, "
            "sum(count) as count, sum(duration_sum) as duration_sum, "
            "max(duration_max) as duration_max, sum(wait_sum) as wait_sum "
            "from (%s) group by hour, task, signal" % union("rollup_hourly"))
        # A task enqueued on one host and executed on another has a row in
        # each store. Copy every row, then fold the (usually few) task ids
        # seen twice into their newest row, with the earliest enqueue, the
        # pipeline parent and the attempts of all hosts.
        columns = ", ".join(TASK_COLUMNS)
        conn.execute("create temp table tasks as select %s, _db from (%s)"
                     % (columns, union("tasks")))
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
        self.schemas = schemas

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

