"""Build the static report: SQL aggregation in SQLite, Jinja2 pages, atomic swap.

:func:`build_report` is the whole public API::

    from hueyscope.reports.builder import build_report
    index = build_report(["events.db"], "site", datasette_url=None)

Everything is computed by SQLite: the builder only ever holds aggregates and
capped lists (the newest 50 of this, the top 20 of that) in Python, so memory
stays flat whatever the size of the store. Questions that have a named query
in :mod:`hueyscope.events.queries` are answered by that query, so the report
and Datasette always agree.

Several event stores (one per host) merge into one report: they are attached
to one connection and read through temporary views; task rows seen by more
than one host (enqueued on one, executed on another) are merged into one row.

The site is rendered into a temporary folder beside ``out`` and swapped in
with two renames, so a web server can keep serving the old site until the
new one is complete.
"""
import datetime
import hashlib
import math
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote, urlencode, urlparse

import jinja2

from hueyscope.events import queries
from hueyscope.events.schema import check_event_store, database_names
from hueyscope.reports import charts

HERE = Path(__file__).parent
# Marks a folder as ours, so a rebuild never replaces somebody else's folder.
MARKER = ".hueyscope-report"
# Caps on per-page lists and on the number of pages: the report stays small
# and fast however long the history is.
NEWEST = 50
TOP = 20
MAX_TASK_PAGES = 500
MAX_RUN_PAGES = 200
# A consumer that has not sent a heartbeat for this long is considered gone.
STALE_SECONDS = 60

FINAL = ("complete", "failed", "revoked", "expired", "canceled",
         "interrupted", "locked", "timeout", "rate-limited", "lost",
         "dropped")
PENDING = ("enqueued", "scheduled", "retrying")
# Run time histogram bucket edges, seconds.
EDGES = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
         10, 30, 60, 300)


# -- formatting ------------------------------------------------------------

def iso(ts):
    """Unix seconds -> ISO-8601 UTC, to the second: 2024-06-01T12:00:05Z."""
    if ts is None:
        return "–"
    dt = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def seconds(value):
    """A duration for humans: 0.4 ms, 12 ms, 1.25 s, 3 min 20 s, 2 h 5 min."""
    if value is None:
        return "–"
    if value < 0.001:
        return "%.2f ms" % (value * 1000)
    if value < 1:
        return "%.3g ms" % (value * 1000)
    if value < 60:
        return "%.3g s" % value
    if value < 3600:
        minutes, rest = divmod(int(round(value)), 60)
        return "%d min %d s" % (minutes, rest) if rest else "%d min" % minutes
    if value < 86400 * 2:
        hours, rest = divmod(int(round(value)) // 60, 60)
        return "%d h %d min" % (hours, rest) if rest else "%d h" % hours
    return "%.1f days" % (value / 86400)


def number(value):
    if value is None:
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return "{:,.2f}".format(value)
    return "{:,}".format(int(value))


def percent(part, whole):
    if not whole:
        return "–"
    value = 100.0 * (part or 0) / whole
    if value and value < 0.1:
        return "<0.1 %"
    return "%.1f %%" % value


def edge_label(value):
    if value < 1:
        return "%g ms" % (value * 1000)
    return "%g s" % value


def slug(text):
    """A file name that is safe whatever the text: letters, digits, dashes.

    A hash of the original is appended, so two names that differ only in
    punctuation ('a/b' and 'a.b') still get two files.
    """
    text = "" if text is None else str(text)
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "x"
    return "%s-%s" % (base, hashlib.sha1(text.encode("utf-8", "replace"))
                      .hexdigest()[:8])


def tilde_encode(value):
    """Datasette's encoding of primary keys in URL paths (spaces become +)."""
    return "".join(
        c if re.match(r"[A-Za-z0-9_-]", c) else "+" if c == " " else
        "".join("~%02X" % b for b in c.encode("utf-8"))
        for c in str(value))


# -- reading the stores ----------------------------------------------------

TASK_COLUMNS = ("task_id", "task", "queue", "status", "enqueued", "ready",
                "started", "finished", "attempts", "wait", "duration",
                "error_type", "error", "fingerprint", "priority", "eta",
                "parent_id", "run_id", "updated")


class Store:
    """One read-only connection over one or more event stores.

    With one file, queries run on it directly (its indexes serve them). With
    several, each file is attached and the tables are read through temporary
    views of the same names, so the named queries run unchanged.
    """

    def __init__(self, sources):
        self.sources = [str(s) for s in sources]
        self.names = database_names(self.sources)
        self.merged = len(self.sources) > 1
        if not self.merged:
            self.conn = sqlite3.connect(
                "file:%s?mode=ro" % quote(os.path.abspath(self.sources[0])),
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
                         ("file:%s?mode=ro" % quote(os.path.abspath(path)),))
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
        return queries.run(self.conn, name, **params)

    def rows(self, sql, *params):
        cursor = self.conn.execute(sql, params)
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row)) for row in cursor.fetchall()]

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


# -- links -----------------------------------------------------------------

class Links:
    """Every URL a page prints: relative links to our pages, Datasette links.

    Page URLs are relative to the site root; templates prefix ``root``.
    Datasette URLs exist only when a base URL was given.
    """

    def __init__(self, store, base=None):
        self.store = store
        self.base = base.rstrip("/") if base else None
        self.task_pages = {}
        self.run_pages = {}

    def task(self, name):
        return self.task_pages.get(name)

    def run(self, run_id):
        return self.run_pages.get(run_id)

    def _ds(self, db, path, params=None):
        url = "%s/%s/%s" % (self.base, quote(db, safe=""), path)
        if params:
            url += "?" + urlencode(params)
        return url

    def ds_task_row(self, task_id):
        if not self.base or task_id is None:
            return None
        db = self.store.db_of("tasks", "task_id", task_id)
        return self._ds(db, "tasks/" + tilde_encode(task_id))

    def ds_task_history(self, task_id):
        if not self.base or task_id is None:
            return None
        db = self.store.db_of("tasks", "task_id", task_id)
        return self._ds(db, "task_history", {"task_id": task_id})

    def ds_run_row(self, run_id):
        if not self.base or run_id is None:
            return None
        db = self.store.db_of("runs", "id", run_id)
        return self._ds(db, "runs/" + tilde_encode(run_id))

    def ds_table(self, table, **filters):
        """One link per database: rows of ``table`` matching the filters."""
        if not self.base:
            return []
        return [(db, self._ds(db, table, filters)) for db in self.store.names]

    def ds_query(self, name, **params):
        if not self.base:
            return []
        return [(db, self._ds(db, name, params or None)) for db in self.store.names]


# -- aggregation -----------------------------------------------------------

def _bucket_case(column):
    parts = ["when %s < %r then %d" % (column, edge, i)
             for i, edge in enumerate(EDGES)]
    return "case when %s is null then null %s else %d end" % (
        column, " ".join(parts), len(EDGES))


def _bucket_labels():
    labels = ["< %s" % edge_label(EDGES[0])]
    labels += ["%s–%s" % (edge_label(a), edge_label(b))
               for a, b in zip(EDGES, EDGES[1:])]
    labels.append("≥ %s" % edge_label(EDGES[-1]))
    return labels


def period(store):
    if store.merged:
        # Per file, where the ts index answers min, max and count at once.
        parts = [store.one("select min(ts) as first, max(ts) as last, "
                           "count(*) as events from %s.events" % schema)
                 for schema in store.schemas]
        firsts = [p["first"] for p in parts if p.get("first") is not None]
        lasts = [p["last"] for p in parts if p.get("last") is not None]
        row = {"first": min(firsts) if firsts else None,
               "last": max(lasts) if lasts else None,
               "events": sum(p.get("events") or 0 for p in parts)}
    else:
        row = store.one("select min(ts) as first, max(ts) as last, "
                        "count(*) as events from events")
    roll = store.one("select min(hour) as first, max(hour) as last, "
                     "sum(count) as events from rollup_hourly")
    first = row.get("first")
    if roll.get("first") is not None and (
            first is None or roll["first"] < first // 3600 * 3600):
        first = roll["first"]  # older events were pruned; roll-ups remain
    return {"first": first, "last": row.get("last") or roll.get("last"),
            "events": row.get("events") or 0,
            "rolled_up": roll.get("events") or 0}


def task_cube(store):
    """One pass over tasks: counts by name, status, attempts and run time bucket."""
    return store.rows(
        "select task, status, min(attempts, 10) as attempts, %s as bucket, "
        "count(*) as n from tasks group by 1, 2, 3, 4" % _bucket_case("duration"))


def count_lock_collisions(store, summaries, total):
    """Set "locked" to the executions that found their lock held.

    A task that collides retries and usually completes, so counting tasks
    whose final status is locked showed 0 after any number of collisions.
    The hourly roll-ups keep the count when old events are pruned.
    """
    total["locked"] = 0
    for summary in summaries.values():
        summary["locked"] = 0
    for row in store.rows("select task, sum(count) as n from rollup_hourly "
                          "where signal = 'locked' group by task"):
        name = row["task"] if row["task"] is not None else "(unnamed)"
        if name in summaries:  # a task whose rows were all pruned has no page
            summaries[name]["locked"] = row["n"]
        total["locked"] += row["n"]


def _blank_summary(name):
    return {"task": name, "total": 0, "complete": 0, "failed": 0, "revoked": 0,
            "expired": 0, "locked": 0, "other": 0, "executing": 0, "lost": 0,
            "in_flight": 0, "pending": 0, "waiting": 0, "retried": 0,
            "retried_ok": 0, "retried_failed": 0, "retried_open": 0,
            "finished": 0, "attempts": {}, "buckets": [0] * (len(EDGES) + 1),
            "statuses": {}}


def summarise(cube, lost_rows):
    """Fold the cube into per-task summaries and a total."""
    tasks = {}
    total = _blank_summary(None)
    for row in cube:
        name = row["task"] if row["task"] is not None else "(unnamed)"
        s = tasks.setdefault(name, _blank_summary(name))
        for target in (s, total):
            n, status = row["n"], row["status"]
            target["total"] += n
            target["statuses"][status] = target["statuses"].get(status, 0) + n
            if status in ("complete", "failed", "revoked", "expired", "locked",
                          "lost"):
                # lost: parked by recovery after killing its worker too often
                target[status] += n
            elif status in FINAL:
                target["other"] += n
            elif status == "executing":
                target["executing"] += n
            elif status in PENDING:
                target["pending"] += n
            elif status == "waiting":
                target["waiting"] += n
            if status in FINAL:
                target["finished"] += n
            attempts = row["attempts"] or 0
            if attempts:
                target["attempts"][attempts] = target["attempts"].get(attempts, 0) + n
            if attempts > 1:
                target["retried"] += n
                if status == "complete":
                    target["retried_ok"] += n
                elif status in FINAL:
                    target["retried_failed"] += n
                else:
                    target["retried_open"] += n
            if row["bucket"] is not None:
                target["buckets"][row["bucket"]] += n
    lost = {}
    for row in lost_rows:
        name = row["task"] if row["task"] is not None else "(unnamed)"
        key = "lost" if row["state"] == "lost" else "in_flight"
        for target in (tasks.setdefault(name, _blank_summary(name)), total):
            target[key] += 1
            if key == "lost":
                target["finished"] += 1
        lost.setdefault(name, []).append(row)
    return tasks, total


def overall_percentiles(store):
    """p50 / p95 / p99 of queue wait and run time over all finished tasks.

    Nearest-rank, like queries.latency_percentiles: the value at rank
    ceil(p * n). Run times are read at their rank straight from the duration
    index; waits (no index of their own) are ranked with a window function.
    """
    out = {}
    # A run time is only recorded with the end of an execution, so "has a
    # duration" means finished, and the duration index alone answers.
    n = store.one("select count(*) as n from tasks where duration is not null")["n"]
    row = {"n": n}
    for p in (50, 95, 99):
        rank = max(1, math.ceil(p * n / 100.0 - 1e-9))
        value = store.one(
            "select duration from tasks where duration is not null "
            "order by duration limit 1 offset ?",
            rank - 1) if n else {}
        row["p%d" % p] = value.get("duration")
    out["duration"] = row
    out["wait"] = store.one(
        "select count(*) as n, "
        "min(case when r >= 0.50 * n then wait end) as p50, "
        "min(case when r >= 0.95 * n then wait end) as p95, "
        "min(case when r >= 0.99 * n then wait end) as p99 "
        "from (select wait, row_number() over (order by wait) as r, "
        "count(*) over () as n from tasks "
        "where wait is not null and finished is not null)")
    return out


def throughput(store, first, last):
    """Hourly roll-ups as chart points (daily when the period is long)."""
    rows = store.query("throughput_per_hour")
    rows.reverse()
    if not rows:
        return [], 3600
    step = 3600
    if (rows[-1]["hour"] - rows[0]["hour"]) > 3600 * 24 * 21:
        step = 86400
        days = {}
        for r in rows:
            d = days.setdefault(r["hour"] // 86400 * 86400, {
                "t": r["hour"] // 86400 * 86400, "completed": 0, "errors": 0,
                "retried": 0, "enqueued": 0})
            for k in ("completed", "errors", "retried", "enqueued"):
                d[k] += r[k] or 0
        points = list(days.values())
    else:
        points = [dict(r, t=r["hour"]) for r in rows]
    # Errors that were retried are drawn as retried, final ones as failed.
    for p in points:
        p["failed"] = max((p["errors"] or 0) - (p["retried"] or 0), 0)
    return points, step


def queue_depth(store, first, last):
    if first is None or last is None:
        return [], 60
    step = max(60, int((last - first) / 300 // 60 * 60) or 60)
    rows = store.rows(
        "select cast(ts / ? as integer) * ? as t, avg(pending) as pending, "
        "max(pending) as peak, avg(scheduled) as scheduled, "
        "avg(in_flight) as in_flight from queue_samples "
        "where ts >= ? group by 1 order by 1", step, step, first)
    return rows, step


def failures(store):
    groups = store.query("failures_by_fingerprint")[:NEWEST * 2]
    if not groups:
        return []
    marks = ",".join("?" * len(groups))
    prints = [g["fingerprint"] for g in groups]
    affected = {}
    for row in store.rows(
            "select fingerprint, task, count(*) as errors from events "
            "where signal = 'error' and fingerprint in (%s) "
            "group by 1, 2 order by 3 desc" % marks, *prints):
        affected.setdefault(row["fingerprint"], []).append(row)
    for g in groups:
        fp = g["fingerprint"]
        g["affected"] = affected.get(fp, [])
        g["instances"] = store.rows(
            "select id, ts, task_id, task, attempt, retries_left, error, host, "
            "worker, run_id, traceback from events "
            "where fingerprint = ? and signal = 'error' "
            "order by ts desc limit ?", fp, TOP)
        g["traceback"] = next((i["traceback"] for i in g["instances"]
                               if i["traceback"]), None)
        g["final"] = store.one(
            "select count(*) as n from tasks where fingerprint = ? "
            "and status = 'failed'", fp).get("n", 0)
    return groups


def retry_chains(store):
    chains = store.query("retry_chains")[:NEWEST]
    if not chains:
        return []
    ids = [c["task_id"] for c in chains]
    marks = ",".join("?" * len(ids))
    # Events are indexed by their task's seq, which is per file; a merged
    # report reads them by task id instead.
    where = ("task_id in (%s)" if store.merged else
             "task_seq in (select seq from tasks where task_id in (%s))")
    events = store.rows(
        "select task_id, ts, signal, attempt, retries_left, duration, wait, "
        "error_type, error, eta from events where %s "
        "order by task_id, ts, id" % (where % marks), *ids)
    by_task = {}
    for e in events:
        by_task.setdefault(e["task_id"], []).append(e)
    for chain in chains:
        chain["attempts_detail"] = attempts_of(by_task.get(chain["task_id"], []))
    return chains


def attempts_of(events):
    """Turn one task's events into attempts: start, outcome, error, delay."""
    attempts = []
    current = None
    last_end = None
    for e in events:
        signal = e["signal"]
        if signal in ("executing", "revoked", "expired"):
            current = {"n": e["attempt"] or len(attempts) + 1, "started": e["ts"],
                       "wait": e["wait"], "outcome": signal if signal != "executing"
                       else "executing", "duration": None, "error_type": None,
                       "error": None, "delay": None, "retries_left": e["retries_left"]}
            if last_end is not None:
                current["delay"] = e["ts"] - last_end
            attempts.append(current)
        elif current is not None and signal in (
                "complete", "error", "locked", "canceled", "interrupted",
                "timeout", "rate-limited"):
            current["outcome"] = signal
            current["duration"] = e["duration"]
            if e["error_type"] or e["error"]:
                current["error_type"] = e["error_type"]
                current["error"] = e["error"]
            last_end = e["ts"]
        elif current is not None and signal == "retrying":
            current["retried"] = True
    return attempts


def runs_detail(store, now):
    runs = store.query("consumer_runs", stale=STALE_SECONDS)
    processed = {}
    for row in store.rows(
            "select run_id, task, status, count(*) as n from tasks "
            "where run_id is not null group by 1, 2, 3"):
        per = processed.setdefault(row["run_id"], {})
        per.setdefault(row["task"], {})[row["status"]] = row["n"]
    for run in runs:
        run["processed"] = sorted(processed.get(run["id"], {}).items(),
                                  key=lambda kv: -sum(kv[1].values()))
        run["tasks_total"] = sum(sum(v.values()) for _, v in run["processed"])
        run["state"] = run_state(run, now)
    return runs


def run_state(run, now=None):
    """How a run ended, or whether it is still beating."""
    if run["stopped"] is not None:
        return run["stop_reason"] or "stopped"
    if run.get("state") == "silent":
        return "silent (no heartbeat)"
    if run.get("state") == "not a consumer":
        return "running"
    return run.get("state") or "running"


def locks(store):
    contention = store.query("lock_contention")
    recent = store.rows(
        "select ts, task_id, task, attempt, retries_left, host, worker, run_id "
        "from events where signal = 'locked' order by ts desc limit ?", NEWEST)
    gave_up = {r["task"]: r["n"] for r in store.rows(
        "select task, count(*) as n from tasks where status = 'locked' "
        "group by +task")}  # "+": read the few locked rows by status
    for row in contention:
        row["gave_up"] = gave_up.get(row["task"], 0)
    return {"contention": contention, "recent": recent}


def schedules(store, summaries, last=None):
    scheduled_now = store.rows(
        "select task_id, task, enqueued, eta, attempts from tasks "
        "where status = 'scheduled' order by eta limit ?", NEWEST)
    scheduled_count = store.one(
        "select count(*) as n from tasks where status = 'scheduled'").get("n", 0)
    revoked_expired = store.query("revoked_and_expired")[:NEWEST]
    scheduled_by_task = store.rows(
        "select task, sum(count) as n from rollup_hourly "
        "where signal = 'scheduled' group by task order by n desc")
    # Periodic tasks are enqueued by a consumer's scheduler, not a producer;
    # pipeline steps, also enqueued by consumers, have a parent. Looking at
    # the last two days finds them without reading every enqueue event; the
    # counts then come from the roll-ups.
    last = last or 0
    names = [r["task"] for r in store.rows(
        "select distinct e.task from events e join runs r on r.id = e.run_id "
        "where e.signal = 'enqueued' and e.ts >= ? and r.role = 'consumer' "
        "and e.task not in (select task from tasks where parent_id is not null)",
        last - 2 * 86400)]
    periodic = []
    if names:
        periodic = store.rows(
            "select task, sum(count) as runs, min(hour) as first_hour, "
            "max(hour) as last_hour from rollup_hourly "
            "where signal = 'enqueued' and task in (%s) group by task "
            "order by runs desc" % ",".join("?" * len(names)), *names)
    edges = {}
    if names:
        edges = {r["task"]: r for r in store.rows(
            "select task, min(ts) as first, max(ts) as last from events "
            "where task in (%s) group by task" % ",".join("?" * len(names)),
            *names)}
    for row in periodic:
        edge = edges.get(row["task"], {})
        row.update(first=edge.get("first") or row["first_hour"],
                   last=edge.get("last") or row["last_hour"])
    for row in periodic:
        row["every"] = ((row["last"] - row["first"]) / (row["runs"] - 1)
                        if row["runs"] > 1 else None)
        row["summary"] = summaries.get(row["task"])
    return {"scheduled_now": scheduled_now, "scheduled_count": scheduled_count,
            "revoked_expired": revoked_expired,
            "scheduled_by_task": scheduled_by_task, "periodic": periodic}


PIPELINE_CTE = """with recursive chain(root, task_id, depth) as (
  select task_id, task_id, 0 from ({roots})
  union all
  select chain.root, c.task_id, chain.depth + 1
  from chain join tasks c on c.parent_id = chain.task_id
  where chain.depth < 50
)"""
# First steps of pipelines: parents of a step that have no parent themselves,
# found from the (few) rows with a parent, not by probing every task.
ROOTS = """select distinct c.parent_id as task_id from tasks c
  join tasks p on p.task_id = c.parent_id
  where c.parent_id is not null and p.parent_id is null"""
BROKEN = ("'failed', 'revoked', 'expired', 'locked', 'canceled', "
          "'interrupted', 'timeout'")


def pipelines(store):
    if not store.rows("select 1 from tasks where parent_id is not null limit 1"):
        return {"shapes": [], "chains": []}
    shapes = store.rows(PIPELINE_CTE.format(roots=ROOTS) + """,
per_root as (
  select chain.root, count(*) as steps,
    sum(t.status = 'complete') as done,
    -- the earliest broken step: depth and name in one sortable string
    min(case when t.status in (%s)
        then printf('%%04d', chain.depth) || t.task end) as broken
  from chain join tasks t on t.task_id = chain.task_id group by chain.root
)
select r.task as first_step, p.steps,
  case when p.done = p.steps then 'complete'
       when p.broken is not null then 'broken' else 'in progress' end as outcome,
  substr(p.broken, 5) as broken_step,
  count(*) as chains
from per_root p join tasks r on r.task_id = p.root
group by 1, 2, 3, 4 order by 1, chains desc""" % BROKEN)
    newest = store.rows(
        "select t.task_id from tasks t where t.parent_id is null and exists "
        "(select 1 from tasks c where c.parent_id = t.task_id) "
        "order by t.enqueued desc limit ?", NEWEST // 2)
    chains = []
    if newest:
        ids = [r["task_id"] for r in newest]
        steps = store.rows(PIPELINE_CTE.format(
            roots="select task_id from tasks where task_id in (%s)"
            % ",".join("?" * len(ids))) + """
select chain.root, chain.depth, t.task_id, t.task, t.status, t.enqueued,
  t.started, t.finished, t.duration, t.attempts, t.error_type, t.error
from chain join tasks t on t.task_id = chain.task_id
order by chain.root, chain.depth""", *ids)
        by_root = {}
        for s in steps:
            by_root.setdefault(s["root"], []).append(s)
        chains = [by_root[i] for i in ids if i in by_root]
    return {"shapes": shapes, "chains": chains}


def task_details(store, name):
    recent = store.query("recent_failures", task=name)[:TOP]
    slowest = store.query("slowest_tasks", task=name)[:TOP // 2]
    hourly = store.query("throughput_per_hour", task=name)
    hourly.reverse()
    for p in hourly:
        p["t"] = p["hour"]
        p["failed"] = max((p["errors"] or 0) - (p["retried"] or 0), 0)
    return {"recent_failures": recent, "slowest": slowest, "hourly": hourly}


def histogram_pairs(buckets):
    """(label, count) from the first to the last non-empty bucket."""
    used = [i for i, n in enumerate(buckets) if n]
    if not used:
        return []
    labels = _bucket_labels()
    short = ["0"] + [edge_label(e) for e in EDGES]
    return [(short[i], buckets[i], labels[i])
            for i in range(used[0], used[-1] + 1)]


# -- rendering -------------------------------------------------------------

def environment():
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True)
    env.filters.update(iso=iso, seconds=seconds, number=number, slug=slug)
    env.globals.update(percent=percent, charts=charts)
    return env


class Site:
    """Writes pages into a folder; knows each page's way back to the root."""

    def __init__(self, folder, env, common):
        self.folder = Path(folder)
        self.env = env
        self.common = common

    def write(self, path, template, **context):
        depth = path.count("/")
        target = self.folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        html = self.env.get_template(template).render(
            root="../" * depth, page=path, **self.common, **context)
        target.write_text(html, encoding="utf-8")


def check_out(out):
    """Refuse to replace anything that is not a previous report."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise ValueError("%s exists and is not a folder" % out)
        if any(out.iterdir()) and not (out / MARKER).exists():
            raise ValueError(
                "%s is not empty and was not written by hueyscope report: "
                "refusing to replace it" % out)


def swap_in(tmp, out, attempts=5):
    """Rename the old site away, the new one in, then delete the old one.

    Between the two renames ``out`` is missing for an instant; a web server
    serving it sees either the whole old site or the whole new one. Two
    builds racing (a consumer's periodic rebuild and a manual one) retry
    until one of them wins the last rename.
    """
    out = Path(out)
    olds = []
    try:
        for _ in range(attempts):
            if out.exists():
                old = out.parent / (".%s.old-%s" % (out.name, uuid.uuid4().hex[:8]))
                try:
                    os.rename(out, old)
                    olds.append(old)
                except FileNotFoundError:
                    pass  # another build moved it away first
            try:
                os.rename(tmp, out)
                return
            except OSError:
                if not out.exists():
                    raise
        raise OSError("%s kept being replaced by another build" % out)
    finally:
        for old in olds:
            shutil.rmtree(old, ignore_errors=True)


class _Progress:
    """A click progress bar on stderr, a callback, or nothing."""

    def __init__(self, progress, total):
        self.bar = None
        self.callback = progress if callable(progress) else None
        self.total, self.done = total, 0
        if progress is True:
            import click
            self.bar = click.progressbar(length=total, label="Building report",
                                         file=sys.stderr)
            self.bar.__enter__()

    def step(self, n=1):
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        if self.callback is not None:
            self.callback(self.done, self.total)

    def close(self):
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


def validate_datasette_url(url):
    if url is None:
        return None
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("--datasette-url must be an http:// or https:// URL, "
                         "not %r" % url)
    return url


def build_report(sources, out, datasette_url=None, progress=False):
    """Render the report of the event stores ``sources`` into folder ``out``.

    Returns the path of index.html. Raises ValueError (one line) for a
    missing or foreign event store, a bad Datasette URL, or an ``out`` folder
    that is not a previous report. ``progress`` is True for a terminal
    progress bar, or a callable ``progress(done, total)``.
    """
    sources = list(dict.fromkeys(str(s) for s in sources))
    if not sources:
        raise ValueError("no event store given")
    for path in sources:
        check_event_store(path, must_exist=True)
    datasette_url = validate_datasette_url(datasette_url)
    out = Path(out).absolute()
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)

    try:
        store = Store(sources)
    except sqlite3.Error as exc:
        raise ValueError("cannot read the event store: %s" % exc)
    tmp = Path(tempfile.mkdtemp(prefix=".%s.new-" % out.name, dir=out.parent))
    bar = None
    try:
        links = Links(store, datasette_url)
        bar = _Progress(progress, 12)
        data = collect(store, bar)
        names = [s["task"] for s in sorted(
            data["summaries"].values(), key=lambda s: -s["total"])][:MAX_TASK_PAGES]
        links.task_pages = {n: "tasks/%s.html" % slug(n) for n in names}
        run_ids = [r["id"] for r in data["runs"]][:MAX_RUN_PAGES]
        links.run_pages = {r: "runs/%s.html" % slug(r) for r in run_ids}
        bar.total += len(names) + len(run_ids)
        render(store, data, links, names, run_ids, tmp, bar)
        (tmp / MARKER).write_text("written by hueyscope report\n")
        os.chmod(tmp, 0o755)
        swap_in(tmp, out)
    except sqlite3.Error as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError("cannot read the event store: %s" % exc)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if bar is not None:
            bar.close()
        store.close()
    return out / "index.html"


def collect(store, bar):
    """Every aggregate the pages need, computed in SQLite."""
    data = {"period": period(store)}
    first, last = data["period"]["first"], data["period"]["last"]
    bar.step()
    lost_rows = store.query("in_flight_or_lost", stale=STALE_SECONDS)
    data["lost"] = lost_rows
    summaries, total = summarise(task_cube(store), lost_rows)
    count_lock_collisions(store, summaries, total)
    data["summaries"], data["total"] = summaries, total
    bar.step()
    data["percentiles"] = {r["task"]: r for r in store.query("latency_percentiles")}
    bar.step()
    data["overall"] = overall_percentiles(store)
    bar.step()
    data["throughput"], data["throughput_step"] = throughput(store, first, last)
    data["depth"], data["depth_step"] = queue_depth(store, first, last)
    data["recent_failures"] = store.query("recent_failures")[:TOP]
    bar.step()
    data["runs"] = runs_detail(store, last)
    bar.step()
    data["failures"] = failures(store)
    data["errors_by_task"] = {}
    for row in store.rows(
            "select task, fingerprint, error_type, count(*) as errors, "
            "max(ts) as last_seen from events where signal = 'error' "
            "group by 1, 2, 3 order by 4 desc"):
        data["errors_by_task"].setdefault(row["task"], []).append(row)
    bar.step()
    data["retries"] = retry_chains(store)
    bar.step()
    data["locks"] = locks(store)
    bar.step()
    data["schedules"] = schedules(store, summaries, last)
    bar.step()
    data["pipelines"] = pipelines(store)
    bar.step()
    return data


def render(store, data, links, names, run_ids, tmp, bar):
    env = environment()
    period_ = data["period"]
    common = {
        "links": links, "period": period_, "generated": time.time(),
        "sources": store.names, "datasette": bool(links.base),
        "bucket_labels": _bucket_labels(),
    }
    site = Site(tmp, env, common)
    summaries = data["summaries"]
    ordered = sorted(summaries.values(), key=lambda s: -s["total"])
    worst = sorted((s for s in ordered if s["failed"] or s["lost"] or s["retried"]),
                   key=lambda s: (-(s["failed"] + s["lost"]),
                                  -(s["failed"] / s["finished"] if s["finished"] else 0),
                                  -s["retried"]))[:10]
    site.write("index.html", "index.html", data=data, tasks=ordered, worst=worst)
    site.write("failures.html", "failures.html", data=data)
    site.write("retries.html", "retries.html", data=data, tasks=ordered)
    site.write("runs.html", "runs.html", data=data)
    site.write("locks.html", "locks.html", data=data)
    site.write("schedules.html", "schedules.html", data=data)
    site.write("pipelines.html", "pipelines.html", data=data)
    bar.step()
    lost_by_run = {}
    for row in data["lost"]:
        lost_by_run.setdefault(row["run_id"], []).append(row)
    for name in names:
        site.write(links.task_pages[name], "task.html", data=data, name=name,
                   s=summaries[name], p=data["percentiles"].get(name, {}),
                   errors=data["errors_by_task"].get(name, []),
                   detail=task_details(store, name),
                   hist=histogram_pairs(summaries[name]["buckets"]))
        bar.step()
    recovered_by_run = {}
    for row in store.query("recovered_and_lost"):
        recovered_by_run.setdefault(row["run_id"], []).append(row)
    runs = {r["id"]: r for r in data["runs"]}
    for run_id in run_ids:
        site.write(links.run_pages[run_id], "run.html", data=data,
                   run=runs[run_id], left=lost_by_run.get(run_id, []),
                   recovered=recovered_by_run.get(run_id, []))
        bar.step()
    static = tmp / "static"
    static.mkdir()
    shutil.copyfile(HERE / "static" / "style.css", static / "style.css")
