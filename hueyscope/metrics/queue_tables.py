"""Leases held, the failed set and pauses, read from the queue's tables of record.

A leased queue (:mod:`hueyscope.queue.leases`) keeps the tasks consumers hold in
``hueyscope_lease`` and the failed set (tasks parked after too many
recoveries, messages of no known task, tasks failed for good) in
``hueyscope_dead_letter``. On a
SQLite queue the file is read without writing
(:func:`hueyscope.readonly.read_only`); on PostgreSQL the same tables are
read through huey's storage, as ``hueyscope status`` does. A Redis queue
has no such tables (huey's own delivery): :func:`for_settings` gives None and
these metrics are left out.
"""
import os
import sys

from prometheus_client.core import GaugeMetricFamily

from hueyscope.metrics.store import Deadline, TimeLimitExceeded
from hueyscope.readonly import read_only

TABLES = ("hueyscope_lease", "hueyscope_dead_letter")
LEASES = "select queue, count(*) from hueyscope_lease group by queue"
FAILED_SET = ("select queue, %s, count(*) from hueyscope_dead_letter "
              "group by 1, 2")


def _kind_sql(has_kind):
    """SQL naming an entry's kind (failed, lost, dropped), as ``hueyscope
    failed`` does; a queue of lease schema 1 has no kind column yet."""
    from hueyscope.queue.failed import _kind_sql as kind_sql

    if has_kind:
        return kind_sql()
    return kind_sql().replace("coalesce(kind, ", "(", 1)


def _counts(execute, has_kind):
    """{metric name: {label values: count}} of the lease and failed-set tables."""
    from hueyscope.queue.failed import KINDS

    leases = {(queue,): n for queue, n in execute(LEASES)}
    failed = {}
    for queue, kind, n in execute(FAILED_SET % _kind_sql(has_kind)):
        for each in KINDS:  # every kind of a queue, from zero
            failed.setdefault((queue, each), 0)
        failed[(queue, kind)] = failed.get((queue, kind), 0) + n
    return {"hueyscope_leases_held": leases,
            "hueyscope_failed_set_tasks": failed,
            "hueyscope_queue_paused_tasks": {}}


def _paused(execute, task_table):
    """{(queue, task name): messages held back} of every pause."""
    from hueyscope.queue.control import held_back

    pauses = execute("select queue, task from hueyscope_paused")
    if not pauses:
        return {}
    pending = {}
    for queue, name, n in execute(
            "select queue, hueyscope_name, count(*) from %s group by 1, 2"
            % task_table):
        pending.setdefault(queue, {})[name] = n
    return {(queue, name): held_back({name}, pending.get(queue, {}))
            for queue, name in pauses}


def _none():
    # The tables are absent: an at-most-once queue, or a queue no leased
    # process has opened yet.
    return {"hueyscope_leases_held": {}, "hueyscope_failed_set_tasks": {},
            "hueyscope_queue_paused_tasks": {}}


class SqliteQueueTables:
    """The tables of a SQLite queue file, read-only at each scrape."""

    def __init__(self, path):
        self.path = path

    def read(self, deadline):
        if not os.path.exists(self.path):
            raise OSError("no queue at %s" % self.path)

        from hueyscope.metrics.store import QUERY_SECONDS
        from hueyscope.queue.files import check_queue_schema

        def counts(conn):
            # At each scrape: the file may have been replaced since the start.
            check_queue_schema(conn, self.path)
            tables = {row[0] for row in conn.execute(
                "select name from sqlite_master where type = 'table'")}
            if not set(TABLES) <= tables:
                return _none()
            columns = {row[1] for row in conn.execute(
                "pragma table_info(hueyscope_dead_letter)")}
            execute = lambda sql: conn.execute(sql).fetchall()  # noqa: E731
            counts = _counts(execute, "kind" in columns)
            named = {row[1] for row in conn.execute("pragma table_info(task)")}
            if "hueyscope_paused" in tables and "hueyscope_name" in named:
                counts["hueyscope_queue_paused_tasks"] = _paused(execute, "task")
            return counts

        return read_only(self.path, deadline.read(counts),
                         seconds=QUERY_SECONDS)


class PostgresQueueTables:
    """The same tables in a PostgreSQL queue, through huey's storage."""

    def __init__(self, huey):
        self.huey = huey

    def read(self, deadline):
        with self.huey.storage.db() as curs:
            remaining = deadline.remaining()
            # The server ends a statement running past the limit (0: none).
            curs.execute("set statement_timeout = %d" % (
                0 if remaining is None else max(1, int(remaining * 1000))))
            curs.execute("select to_regclass('hueyscope_lease') is not null "
                         "and to_regclass('hueyscope_dead_letter') is not null")
            if not curs.fetchone()[0]:
                return _none()

            def execute(sql):
                curs.execute(sql)
                return curs.fetchall()

            has_kind = bool(execute(
                "select 1 from information_schema.columns where table_schema "
                "= current_schema() and table_name = 'hueyscope_dead_letter' "
                "and column_name = 'kind'"))
            counts = _counts(execute, has_kind)
            curs.execute("select to_regclass('hueyscope_paused') is not null")
            if curs.fetchone()[0]:
                counts["hueyscope_queue_paused_tasks"] = _paused(
                    execute, self.huey.storage.table_task)
            return counts


class QueueTables:
    """Metric families of a queue's lease and failed-set tables."""

    def __init__(self, source, label):
        self.source = source
        self.label = label  # the queue as named in messages (no password)
        self.warned = None

    def warn(self, message):
        """One stderr line per new problem, not one per scrape."""
        if message != self.warned:
            print("hueyscope metrics: %s" % message, file=sys.stderr, flush=True)
            self.warned = message

    def families(self, metrics, gauge, deadline=None):
        deadline = deadline or Deadline()
        try:
            counts = self.source.read(deadline)
        except TimeLimitExceeded:
            raise
        except Exception as exc:
            deadline.check()
            # A queue file not created yet or locked, psycopg's errors: the
            # store's metrics are still worth serving, and hueyscope_queue_up
            # says these are missing.
            self.warn("cannot read queue %s: %s" % (self.label, (
                str(exc).strip().splitlines() or [type(exc).__name__])[0]))
            yield gauge("hueyscope_queue_up", 0)
            return
        self.warned = None
        for name, per_labels in counts.items():
            metric = metrics[name]
            family = GaugeMetricFamily(metric.name, metric.help,
                                       labels=metric.labels)
            for labels in sorted(per_labels):
                family.add_metric(list(labels), per_labels[labels])
            yield family
        yield gauge("hueyscope_queue_up", 1)


def for_settings(settings):
    """QueueTables for the settings' queue, or None for a Redis queue.

    Raises ValueError (one line) for a PostgreSQL queue that cannot be
    opened, or a SQLite queue path that is not a queue file.
    """
    scheme = settings.queue_scheme
    if scheme == "redis":
        return None
    if scheme == "sqlite":
        from hueyscope.queue import check_queue_file

        path = settings.queue_path
        if os.path.exists(path):
            # An event store or another database given as the queue.
            check_queue_file(path)
        return QueueTables(SqliteQueueTables(path), path)
    from hueyscope.queue.postgres import _safe, make_postgres_huey
    from hueyscope.queue import QUEUE_NAME

    # Not leased: building a leased Huey would create the lease tables in a
    # queue that has none; reading them needs only a connection.
    huey = make_postgres_huey(QUEUE_NAME, settings.queue, leased=False)
    return QueueTables(PostgresQueueTables(huey), _safe(settings.queue))
