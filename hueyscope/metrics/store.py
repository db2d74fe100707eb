"""Metrics computed from the event store, in SQL, each time they are read.

:class:`StoreCollector` is a prometheus-client custom collector: nothing is
observed or kept in memory between scrapes. Each scrape opens the store
read-only (:func:`hueyscope.readonly.read_only`: no ``-wal`` or ``-shm`` is
left beside a store nobody has open), checks that its schema is ours
(:func:`hueyscope.events.schema.check_store`), reads everything in one read
transaction, so the numbers of one scrape agree with each other, and
closes it. Each query may run :data:`QUERY_SECONDS`; a signal to stop
(:func:`hueyscope.readonly.stop_queries`) stops one under way at once.

Names follow the OpenTelemetry messaging semantic conventions as the
OpenTelemetry-to-Prometheus translation spells them (``messaging.process.duration``
in seconds becomes ``messaging_process_duration_seconds``); what the
conventions have no name for is prefixed ``hueyscope_``. :data:`METRICS`
lists every family; docs/metrics.md's table is written from it.
"""
import collections
import sqlite3
import sys
import time

from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)

from hueyscope.events.queries import run_alive
from hueyscope.events.schema import check_store
from hueyscope.readonly import read_only, stopping
from hueyscope.signals import STALE_SECONDS

# OpenTelemetry's messaging.system attribute of huey's messages.
SYSTEM = "huey"
# Histogram bucket upper bounds, seconds: the report's run time edges (1 ms
# to 5 min), then 15 min and 1 h for queue waits behind a backlog.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
           2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
# Signals that end an execution attempt or a delivery, as counted by
# hueyscope_task_outcomes_total (the label value is the signal's name).
OUTCOMES = ("complete", "error", "retrying", "locked", "revoked", "expired",
            "canceled", "interrupted", "timeout", "rate-limited", "recovered",
            "lost", "dropped", "not-queued", "requeued", "deduplicated")
# Every tasks.status (hueyscope/events/writer.py), each given as a series
# from zero so an alert on one needs no "absent()".
STATUSES = ("waiting", "enqueued", "scheduled", "executing", "retrying",
            "complete", "failed", "locked", "revoked", "expired", "canceled",
            "interrupted", "timeout", "rate-limited", "lost", "dropped",
            "not-queued", "deduplicated")
# Statuses of a task that is on the queue or in its schedule.
QUEUED = ("enqueued", "scheduled", "retrying")
UNNAMED = "(unnamed)"
# Seconds one query of a scrape may run: a scrape must answer within
# Prometheus' own timeout (10 s by default); on a million events the
# slowest takes well under one.
QUERY_SECONDS = 10.0

Metric = collections.namedtuple("Metric", "name type labels help source")

METRICS = (
    Metric("messaging_client_sent_messages_total", "counter",
           ("messaging_system", "task"),
           "Messages put on the queue (huey's enqueued signal: first "
           "enqueues, retries and due scheduled tasks).",
           "rollup_hourly, signal enqueued"),
    Metric("messaging_client_consumed_messages_total", "counter",
           ("messaging_system", "task"),
           "Messages delivered to the task's code (huey's executing signal: "
           "one per execution attempt).",
           "rollup_hourly, signal executing"),
    Metric("hueyscope_task_outcomes_total", "counter", ("task", "outcome"),
           "Attempts and deliveries by how they ended; outcome is the "
           "signal: complete, error, retrying, locked, revoked, expired, "
           "canceled, interrupted, timeout, rate-limited, recovered, lost, "
           "dropped, not-queued, requeued (put back from the failed set).",
           "rollup_hourly (kept by hueyscope prune)"),
    Metric("hueyscope_tasks", "gauge", ("task", "status"),
           "Tasks in the event store by current status; status failed is "
           "a task that failed for good (no retry left).",
           "tasks.status (hueyscope prune removes finished tasks)"),
    Metric("messaging_process_duration_seconds", "histogram",
           ("messaging_system", "task"),
           "Run time of each task's last attempt, from executing to its "
           "terminal signal.",
           "tasks.duration"),
    Metric("hueyscope_queue_wait_seconds", "histogram", ("task",),
           "Time each task waited from when it could run (enqueue or eta) "
           "to executing.",
           "tasks.wait"),
    Metric("hueyscope_queue_pending_tasks", "gauge",
           ("messaging_destination_name",),
           "Tasks on the queue that can run now: enqueued, or scheduled "
           "and due.",
           "tasks with status enqueued, scheduled or retrying, ready <= now"),
    Metric("hueyscope_queue_scheduled_tasks", "gauge",
           ("messaging_destination_name",),
           "Tasks in the schedule that are not due yet (delayed, or "
           "waiting to be retried).",
           "tasks with status enqueued, scheduled or retrying, ready > now"),
    Metric("hueyscope_queue_oldest_pending_age_seconds", "gauge",
           ("messaging_destination_name",),
           "Seconds since the oldest pending task could run (0 when none "
           "is pending).",
           "now - min(tasks.ready) of the pending tasks"),
    Metric("hueyscope_consumers_alive", "gauge", ("host",),
           "Consumer processes not stopped whose heartbeat is fresher than "
           "60 s.",
           "runs: role consumer, stopped null, heartbeat within 60 s"),
    Metric("hueyscope_recorder_events_written_total", "counter", ("host",),
           "Events the recorders wrote into the event store.",
           "sum of runs.events_written"),
    Metric("hueyscope_recorder_events_dropped_total", "counter", ("host",),
           "Events the recorders could not write (the store was unwritable "
           "past every retry).",
           "sum of runs.events_dropped"),
    Metric("hueyscope_leases_held", "gauge", ("messaging_destination_name",),
           "Tasks taken by consumers whose outcome is not stored yet "
           "(leased queues: SQLite, PostgreSQL).",
           "queue: hueyscope_lease"),
    Metric("hueyscope_failed_set_tasks", "gauge",
           ("messaging_destination_name", "kind"),
           "Tasks in the failed set (hueyscope failed) by kind: failed for "
           "good, lost after too many recoveries, dropped (no such task).",
           "queue: hueyscope_dead_letter"),
    Metric("hueyscope_queue_paused_tasks", "gauge",
           ("messaging_destination_name", "task"),
           "Tasks held back by a pause (hueyscope pause), per paused task "
           "name (* for the whole queue); 0 for a pause that holds none.",
           "queue: hueyscope_paused, hueyscope_name of huey's task table"),
    Metric("hueyscope_event_store_up", "gauge", (),
           "1 when the event store could be read at this scrape, else 0.",
           "the event store"),
    Metric("hueyscope_queue_up", "gauge", (),
           "1 when the queue's tables could be read at this scrape, else 0 "
           "(a queue file not created yet, a server down); absent for a "
           "Redis queue.",
           "the queue"),
    Metric("hueyscope_metrics_collect_seconds", "gauge", (),
           "Seconds the computation of these values took.",
           "the metrics process"),
    Metric("hueyscope_metrics_computations_total", "counter", (),
           "Times this process computed the metrics since it started "
           "(scrapes served from the last computation do not count).",
           "the metrics process"),
)


class TimeLimitExceeded(Exception):
    """The metrics took longer to compute than their time limit."""


class Deadline:
    """A time limit on one computation of the metrics (None: no limit).

    :meth:`bound` makes a SQLite connection interrupt its statement once the
    limit has passed; :meth:`check` raises :class:`TimeLimitExceeded` then.
    """

    def __init__(self, seconds=None):
        self.seconds = seconds
        self.at = None if seconds is None else time.monotonic() + seconds

    def passed(self):
        return self.at is not None and time.monotonic() > self.at

    def check(self):
        if self.passed():
            raise TimeLimitExceeded(
                "computing the metrics took longer than %g s" % self.seconds)

    def remaining(self):
        """Seconds left, or None without a limit."""
        return None if self.at is None else max(0.0, self.at - time.monotonic())

    def bound(self, conn):
        if self.at is not None:
            # Called every 1000 SQLite VM instructions; true interrupts. It
            # replaces the connection's own progress handler, so it asks
            # that one too (hueyscope.readonly.guard: the time limit of
            # one query, a stop asked by a signal).
            limit = getattr(conn, "limit", None)
            conn.set_progress_handler(
                lambda: self.passed() or bool(limit and limit()), 1000)

    def read(self, read):
        """``read`` as a :func:`hueyscope.readonly.read_only` callback that
        stops at the limit: an interrupted statement is TimeLimitExceeded."""
        def bounded(conn):
            self.bound(conn)
            try:
                return read(conn)
            except sqlite3.OperationalError:
                self.check()
                raise
        return bounded


def _name(task):
    return UNNAMED if task is None else task


def _bucket_sql(column):
    """SQL: the index in BUCKETS of the first bound ``column`` is at or
    under, len(BUCKETS) for +Inf (Prometheus buckets count value <= le)."""
    whens = " ".join("when %s <= %r then %d" % (column, bound, i)
                     for i, bound in enumerate(BUCKETS))
    return "case %s else %d end" % (whens, len(BUCKETS))


def _histogram_sql(column):
    # One walk of the (task, column, finished) covering index per name: no
    # row of the tasks table is read.
    return ("select task, %s as bucket, count(*), sum(%s) from tasks "
            "where %s is not null group by task, bucket"
            % (_bucket_sql(column), column, column))


HISTOGRAM_SQL = {"duration": _histogram_sql("duration"),
                 "wait": _histogram_sql("wait")}


def _le(bound):
    return "+Inf" if bound is None else repr(float(bound))


def histogram_family(metric, rows, extra_labels=()):
    """A HistogramMetricFamily from (task, bucket, count, sum) rows."""
    per_task = {}
    for task, bucket, count, total in rows:
        counts, sums = per_task.setdefault(_name(task), ([0] * (len(BUCKETS) + 1), [0.0]))
        counts[bucket] += count
        sums[0] += total or 0.0
    family = HistogramMetricFamily(
        metric.name, metric.help, labels=metric.labels)
    for task in sorted(per_task):
        counts, sums = per_task[task]
        cumulative, buckets = 0, []
        for bound, count in zip(BUCKETS + (None,), counts):
            cumulative += count
            buckets.append((_le(bound), cumulative))
        family.add_metric(list(extra_labels) + [task], buckets,
                          sum_value=sums[0])
    return family


def _statuses(conn):
    """(task, status, count) rows of the tasks table, read fast.

    Grouping every row by task and status reads the whole table (0.6 s at
    a million events). Almost every task is complete, so: tasks per name
    from the task index alone, the few in any other status through the
    status index, and complete as the difference (so a status this code
    does not know would count as complete: STATUSES is the writer's list).
    """
    totals = dict(conn.execute("select task, count(*) from tasks group by task"))
    others = [status for status in STATUSES if status != "complete"]
    rows = conn.execute(
        "select task, status, count(*) from tasks indexed by idx_tasks_status "
        "where status in (%s) group by task, status" % ", ".join("?" * len(others)),
        others).fetchall()
    for task, _, count in rows:
        totals[task] -= count
    return rows + [(task, "complete", n) for task, n in totals.items()]


class StoreReading:
    """Everything one scrape reads from the event store, in one snapshot."""

    def __init__(self, conn, now, path, deadline=None):
        deadline = deadline or Deadline()
        conn.execute("begin")
        # In the snapshot read: the file may have changed since the start.
        check_store(conn, path)
        self.signals = conn.execute(
            "select task, signal, sum(count) from rollup_hourly "
            "group by task, signal").fetchall()
        deadline.check()
        self.statuses = _statuses(conn)
        deadline.check()
        self.durations = conn.execute(HISTOGRAM_SQL["duration"]).fetchall()
        deadline.check()
        self.waits = conn.execute(HISTOGRAM_SQL["wait"]).fetchall()
        deadline.check()
        marks = ", ".join("?" * len(QUEUED))
        # Few rows: the status index finds the tasks that are still queued.
        self.queued = conn.execute(
            "select queue, coalesce(ready, eta, enqueued, updated) from tasks "
            "where status in (%s)" % marks, QUEUED).fetchall()
        self.queues = [row[0] for row in conn.execute(
            "select distinct queue from runs where queue is not null")]
        self.consumers = conn.execute(
            "select host, sum(" + run_alive("?", STALE_SECONDS) + ") from runs "
            "where role = 'consumer' group by host",
            (now,)).fetchall()
        self.recorded = conn.execute(
            "select host, sum(events_written), sum(events_dropped) from runs "
            "group by host").fetchall()
        conn.execute("commit")
        deadline.check()


def read_store(path, now=None, deadline=None):
    """A :class:`StoreReading` of the event store at ``path``; raises
    sqlite3.Error as sqlite3 does (:class:`hueyscope.readonly.QueryStopped`
    for one query longer than :data:`QUERY_SECONDS`), ValueError for a
    schema not ours, TimeLimitExceeded past ``deadline``."""
    now = time.time() if now is None else now
    deadline = deadline or Deadline()
    return read_only(path, deadline.read(
        lambda conn: StoreReading(conn, now, path, deadline)),
        seconds=QUERY_SECONDS)


def store_families(reading, now):
    """The metric families of one :class:`StoreReading`."""
    by_name = {m.name: m for m in METRICS}
    yield from _signal_families(reading, by_name)
    yield _status_family(reading, by_name["hueyscope_tasks"])
    yield histogram_family(by_name["messaging_process_duration_seconds"],
                           reading.durations, (SYSTEM,))
    yield histogram_family(by_name["hueyscope_queue_wait_seconds"],
                           reading.waits)
    yield from _queue_families(reading, now, by_name)
    yield from _run_families(reading, by_name)


def _counter(metric):
    # prometheus-client adds the _total suffix itself.
    return CounterMetricFamily(metric.name[:-len("_total")], metric.help,
                               labels=metric.labels)


def _signal_families(reading, by_name):
    counts = {}
    for task, signal, count in reading.signals:
        counts[(_name(task), signal)] = counts.get((_name(task), signal), 0) + count
    names = sorted({task for task, _ in counts})
    sent = _counter(by_name["messaging_client_sent_messages_total"])
    consumed = _counter(by_name["messaging_client_consumed_messages_total"])
    outcomes = _counter(by_name["hueyscope_task_outcomes_total"])
    for task in names:
        sent.add_metric([SYSTEM, task], counts.get((task, "enqueued"), 0))
        consumed.add_metric([SYSTEM, task], counts.get((task, "executing"), 0))
        for outcome in OUTCOMES:
            outcomes.add_metric([task, outcome], counts.get((task, outcome), 0))
    return sent, consumed, outcomes


def _status_family(reading, metric):
    counts = {(_name(task), status): n for task, status, n in reading.statuses}
    family = GaugeMetricFamily(metric.name, metric.help, labels=metric.labels)
    for task in sorted({task for task, _ in counts}):
        for status in STATUSES:
            family.add_metric([task, status], counts.get((task, status), 0))
    return family


def _queue_families(reading, now, by_name):
    queues = {name: [0, 0, None] for name in reading.queues}
    for queue, ready in reading.queued:
        entry = queues.setdefault(queue or "", [0, 0, None])
        if ready is None or ready <= now:
            entry[0] += 1
            if ready is not None and (entry[2] is None or ready < entry[2]):
                entry[2] = ready
        else:
            entry[1] += 1
    families = [GaugeMetricFamily(by_name[name].name, by_name[name].help,
                                  labels=by_name[name].labels)
                for name in ("hueyscope_queue_pending_tasks",
                             "hueyscope_queue_scheduled_tasks",
                             "hueyscope_queue_oldest_pending_age_seconds")]
    for queue in sorted(queues):
        pending, scheduled, oldest = queues[queue]
        families[0].add_metric([queue], pending)
        families[1].add_metric([queue], scheduled)
        families[2].add_metric([queue], 0.0 if oldest is None
                               else max(0.0, now - oldest))
    return families


def _run_families(reading, by_name):
    alive = GaugeMetricFamily(
        "hueyscope_consumers_alive", by_name["hueyscope_consumers_alive"].help,
        labels=("host",))
    for host, count in sorted(reading.consumers, key=lambda r: r[0] or ""):
        alive.add_metric([host or ""], count or 0)
    written = _counter(by_name["hueyscope_recorder_events_written_total"])
    dropped = _counter(by_name["hueyscope_recorder_events_dropped_total"])
    for host, wrote, lost in sorted(reading.recorded, key=lambda r: r[0] or ""):
        written.add_metric([host or ""], wrote or 0)
        dropped.add_metric([host or ""], lost or 0)
    return alive, written, dropped


def _gauge(name, value):
    metric = {m.name: m for m in METRICS}[name]
    family = GaugeMetricFamily(metric.name, metric.help)
    family.add_metric([], value)
    return family


class StoreCollector:
    """Reads the event store (and the queue's tables, if given) per scrape.

    A store that cannot be read at a scrape (deleted, locked past the busy
    timeout) gives ``hueyscope_event_store_up 0`` and a line on stderr, not
    an error page: Prometheus keeps scraping and an alert can fire on it.
    A computation longer than ``time_limit`` seconds is stopped and raises
    :class:`TimeLimitExceeded` (the server answers 503).
    """

    def __init__(self, events_path, queue_tables=None, time_limit=None):
        self.events_path = events_path
        self.queue_tables = queue_tables
        self.time_limit = time_limit
        self.computations = 0
        self.warned = None

    def warn(self, message):
        """One stderr line per new problem, not one per scrape."""
        if message != self.warned:
            print("hueyscope metrics: %s" % message, file=sys.stderr, flush=True)
            self.warned = message

    def describe(self):
        # No description up front: describing would mean reading the store
        # when the collector is registered.
        return []

    def collect(self):
        started = time.perf_counter()
        now = time.time()
        deadline = Deadline(self.time_limit)
        self.computations += 1
        try:
            reading = read_store(self.events_path, now, deadline)
        except (sqlite3.Error, ValueError) as exc:
            if stopping():
                raise  # asked to stop: no half-read scrape is written
            self.warn("cannot read event store %s: %s" % (self.events_path, exc))
            yield _gauge("hueyscope_event_store_up", 0)
        else:
            self.warned = None
            yield from store_families(reading, now)
            yield _gauge("hueyscope_event_store_up", 1)
        if self.queue_tables is not None:
            yield from self.queue_tables.families(
                {m.name: m for m in METRICS}, _gauge, deadline)
        computations = _counter({m.name: m for m in METRICS}[
            "hueyscope_metrics_computations_total"])
        computations.add_metric([], self.computations)
        yield computations
        yield _gauge("hueyscope_metrics_collect_seconds",
                     time.perf_counter() - started)
