"""What the report says, computed in SQLite.

The pages only ever hold aggregates and capped lists (the newest 50 of this,
the top 20 of that) in Python, so memory stays flat whatever the size of the
store. Questions that have a named query in :mod:`hueyscope.events.queries`
are answered by that query, so the report and Datasette always agree.
:func:`collect` gathers everything the pages need.
"""
import json
import math
import sqlite3

from hueyscope.reports import timeline
from hueyscope.reports.format import edge_label
from hueyscope.signals import STALE_SECONDS

# Caps on per-page lists: the report stays small
# and fast however long the history is.
NEWEST = 50
TOP = 20
FINAL = ("complete", "failed", "revoked", "expired", "canceled",
         "interrupted", "locked", "timeout", "rate-limited", "lost",
         "dropped", "not-queued", "deduplicated")
PENDING = ("enqueued", "scheduled", "retrying")
# Run time histogram bucket edges, seconds.
EDGES = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
         10, 30, 60, 300)


def _bucket_case(column):
    """SQL: the run time histogram bucket (an index into EDGES) of ``column``."""
    parts = ["when %s < %r then %d" % (column, edge, i)
             for i, edge in enumerate(EDGES)]
    return "case when %s is null then null %s else %d end" % (
        column, " ".join(parts), len(EDGES))


def bucket_labels():
    """The range of each run time histogram bucket: '< 1 ms', '1 ms–2.5 ms'..."""
    labels = ["< %s" % edge_label(EDGES[0])]
    labels += ["%s–%s" % (edge_label(a), edge_label(b))
               for a, b in zip(EDGES, EDGES[1:])]
    labels.append("≥ %s" % edge_label(EDGES[-1]))
    return labels


def period(store):
    """The time the report covers: first and last event, and counts.

    ``first`` reaches back to the oldest roll-up when older events were
    pruned; ``events_first`` is the oldest event still stored.
    """
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
            "events": row.get("events") or 0, "events_first": row.get("first"),
            "rolled_up": roll.get("events") or 0}


def task_cube(store):
    """One pass over tasks: counts by name, status, attempts and run time bucket."""
    return store.rows(
        "select task, status, min(attempts, 10) as attempts, %s as bucket, "
        "count(*) as n from tasks group by 1, 2, 3, 4" % _bucket_case("duration"))


def _blank_summary(name):
    return {"task": name, "total": 0, "complete": 0, "failed": 0, "revoked": 0,
            "expired": 0, "locked": 0, "other": 0, "executing": 0, "lost": 0,
            "in_flight": 0, "pending": 0, "waiting": 0, "retried": 0,
            "retried_ok": 0, "retried_failed": 0, "retried_open": 0,
            "finished": 0, "attempts": {}, "buckets": [0] * (len(EDGES) + 1),
            "statuses": {}}


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


def failures(store):
    """Error groups by fingerprint, each with its tasks, newest instances and
    one traceback."""
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
    """The newest tasks that took more than one attempt, attempt by attempt."""
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
            if current["outcome"] == "executing":
                # RetryTask: the attempt ends asking for a retry, with no
                # error signal; 'retrying' carries its run time.
                current["outcome"] = "retrying"
                current["duration"] = e["duration"]
                last_end = e["ts"]
    return attempts


def runs_detail(store, now):
    """Every run, newest first, with what it processed and how it ended."""
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
    """Lock contention per task name, and the newest locked-out attempts."""
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
    """Scheduled, revoked and expired tasks, and periodic tasks with their
    rhythm."""
    scheduled_now = store.rows(
        "select task_id, task, enqueued, eta, attempts from tasks "
        "where status = 'scheduled' order by eta limit ?", NEWEST)
    scheduled_count = store.one(
        "select count(*) as n from tasks where status = 'scheduled'").get("n", 0)
    revoked_expired = store.query("revoked_and_expired")[:NEWEST]
    scheduled_by_task = store.rows(
        "select task, sum(count) as n from rollup_hourly "
        "where signal = 'scheduled' group by task order by n desc")
    # Periodic tasks are the ones consumer runs found declared periodic in
    # huey's registry (runs.periodic): a retried or delayed task, also
    # enqueued by a consumer, is not one. Runs are executions, from the
    # roll-ups.
    names = declared_periodic(store)
    periodic = []
    if names:
        periodic = store.rows(
            "select task, sum(count) as runs, min(hour) as first_hour, "
            "max(hour) as last_hour from rollup_hourly "
            "where signal = 'executing' and task in (%s) group by task "
            "order by runs desc" % ",".join("?" * len(names)), *names)
        ran = {row["task"] for row in periodic}
        periodic += [{"task": name, "runs": 0, "first_hour": None,
                      "last_hour": None} for name in names if name not in ran]
    edges = {}
    if names:
        edges = {r["task"]: r for r in store.rows(
            "select task, min(ts) as first, max(ts) as last from events "
            "where task in (%s) and signal = 'executing' group by task"
            % ",".join("?" * len(names)),
            *names)}
    for row in periodic:
        edge = edges.get(row["task"], {})
        row.update(first=edge.get("first") or row["first_hour"],
                   last=edge.get("last") or row["last_hour"])
    for row in periodic:
        row["every"] = ((row["last"] - row["first"]) / (row["runs"] - 1)
                        if row["runs"] > 1 and row["last"] is not None else None)
        row["summary"] = summaries.get(row["task"])
    return {"scheduled_now": scheduled_now, "scheduled_count": scheduled_count,
            "revoked_expired": revoked_expired,
            "scheduled_by_task": scheduled_by_task, "periodic": periodic}


def declared_periodic(store):
    """Names of the tasks any consumer run recorded as declared periodic."""
    try:
        rows = store.rows("select distinct periodic from runs "
                          "where periodic is not null")
    except sqlite3.OperationalError:  # a store from before runs.periodic
        return []
    names = set()
    for row in rows:
        try:
            names.update(json.loads(row["periodic"]))
        except (TypeError, ValueError):
            continue
    return sorted(names)


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
    """Pipeline outcomes by shape (first step, steps, where it broke) and the
    newest chains step by step."""
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


def task_details(store, name, period):
    """A task page's own lists, and its executions over the report's period."""
    recent = store.query("recent_failures", task=name)[:TOP]
    slowest = store.query("slowest_tasks", task=name)[:TOP // 2]
    return {"recent_failures": recent, "slowest": slowest,
            "throughput": timeline.throughput(store, period, task=name),
            "progress": _told(store, PROGRESS_OF_TASK, name),
            "logs": _told(store, LOGS_OF_TASK, name)}


# What tasks of a name told while they ran (hueyscope.progress, their log
# lines): tables of their own, absent from stores older than m008 and not
# merged across stores.
PROGRESS_OF_TASK = """select p.task_id, p.fraction, p.message, p.ts, t.status
from task_progress p left join tasks t on t.task_id = p.task_id
where p.task = ? order by p.ts desc limit 20"""
LOGS_OF_TASK = """select * from (select ts, task_id, attempt, level, logger,
message from task_logs where task = ? order by ts desc, id desc limit 100)
order by ts, rowid"""


def _told(store, sql, name):
    try:
        return store.rows(sql, name)
    except sqlite3.Error:
        return []


def recovered_by_run(store):
    """Tasks put back on the queue (or parked) after their run died, by run."""
    by_run = {}
    for row in store.query("recovered_and_lost"):
        by_run.setdefault(row["run_id"], []).append(row)
    return by_run


def histogram_pairs(buckets):
    """(label, count) from the first to the last non-empty bucket."""
    used = [i for i, n in enumerate(buckets) if n]
    if not used:
        return []
    labels = bucket_labels()
    short = ["0"] + [edge_label(e) for e in EDGES]
    return [(short[i], buckets[i], labels[i])
            for i in range(used[0], used[-1] + 1)]


def collect(store, bar):
    """Every aggregate the pages need, computed in SQLite."""
    data = {"period": period(store)}
    last = data["period"]["last"]
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
    data["throughput"] = timeline.throughput(store, data["period"])
    data["depth"] = timeline.queue_depth(store, data["period"])
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


