"""Named SQL over the event store, shared by the static report and Datasette.

Each question is answered by one :class:`Query`. The report runs it with
:func:`run`; ``hueyscope browse`` publishes the same text as a Datasette
canned query. Parameters are SQLite named parameters (``:since``); an empty
string means "no filter" (or the documented default), which is what Datasette
sends for a blank field, and what :func:`run` passes for a parameter not given.

Time parameters (``:since``) take unix seconds or an ISO-8601 date or
datetime in UTC (``2024-06-01``, ``2024-06-01 12:30``).

Percentiles use the nearest-rank method (the ceil(p * n)-th smallest value),
computed inside SQLite from ordered walks of covering indexes, without loading
the rows into Python.

Every query is read-only and is planned against the indexes of
:mod:`hueyscope.events.schema`: each one answers in milliseconds on a store
of a million events (see ``benchmarks/browse_bench.py``).
"""
import dataclasses

from hueyscope.signals import STALE_SECONDS


@dataclasses.dataclass(frozen=True)
class Query:
    name: str
    title: str
    description: str
    sql: str
    params: tuple = ()


def _time(param):
    """SQL turning ``:param`` (unix seconds or ISO-8601 UTC) into unix seconds."""
    return ("(case when :{p} glob '[0-9][0-9][0-9][0-9]-*' "
            "then (julianday(:{p}) - 2440587.5) * 86400.0 "
            "else cast(:{p} as real) end)").format(p=param)


def _since(column, param="since"):
    """A WHERE term: ``column`` at or after ``:param``; true when it is blank."""
    return "(:{p} = '' or {col} >= {t})".format(p=param, col=column, t=_time(param))


def _task_filter(column="task"):
    """A WHERE term: ``column`` equals ``:task``; true when it is blank."""
    return "(:task = '' or {col} = :task)".format(col=column)


# Unix time now, in SQL: a consumer is alive if it beat recently *now*.
_NOW = "cast(strftime('%s', 'now') as real)"
_STALE = "%g" % STALE_SECONDS  # the default of :stale in the SQL


# -- the facts -----------------------------------------------------------------
# What the report, Datasette, metrics and alerts all mean by a run that is
# alive, a task that is lost and an outcome that failed: each written once,
# as SQL over the event store, and used by all of them. ``run`` and ``task``
# are table aliases ("" for the bare table); ``now`` and ``stale`` are SQL
# (a parameter such as ":now", or an expression).

# Outcomes of a task that finished, and those of them that are failures.
OUTCOMES = ("complete", "failed", "timeout")
FAILED_OUTCOMES = ("failed", "timeout")


def _column(alias, name):
    return "%s.%s" % (alias, name) if alias else name


def last_beat(run=""):
    """SQL: a run's last sign of life (its heartbeat, or its start)."""
    return "coalesce(%s, %s)" % (_column(run, "heartbeat"), _column(run, "started"))


def run_alive(now, stale, run=""):
    """SQL: the run has not stopped and beat within ``stale`` seconds of ``now``."""
    return "(%s is null and %s >= %s - %s)" % (
        _column(run, "stopped"), last_beat(run), now, stale)


def task_lost(now, stale, task="t", run="r"):
    """SQL: an executing task whose run is gone, stopped or silent: it died
    with it (``run`` is left-joined on the task's run_id)."""
    return "(%s = 'executing' and (%s is null or not %s))" % (
        _column(task, "status"), _column(run, "id"), run_alive(now, stale, run))


def sql_list(values):
    """SQL literal list of a few constant strings: ('a', 'b')."""
    return "(%s)" % ", ".join("'%s'" % v for v in values)


PERCENTILES = ((0.50, 50), (0.95, 95), (0.99, 99))


def _nearest_rank(p, n):
    """SQL for ceil(p * n), the nearest rank, without SQLite's math functions."""
    return "(cast({p} * {n} as integer) + ({p} * {n} > cast({p} * {n} as integer)))".format(
        p=p, n=n)


def _ranked_rowids(column):
    # The rowids of the task's rows, in order of ``column``, as a JSON array:
    # one walk of the task's slice of the (task, column, finished) index,
    # cheaper per row than a window function, and nothing is sorted. Rowids,
    # not values, so the values are read back exactly, not through JSON text.
    return """(select json_group_array(rid) from (
      select t.rowid as rid from tasks t
      where t.task = names.task and t.{col} is not null and t.finished is not null
        and {since}
      order by t.{col}))""".format(col=column, since=_since("t.finished"))


def _percentile_values(column, ranked, out):
    # The value at the nearest rank, read back from the table by rowid.
    # An empty array has no rank: '$[0]' of '[]' is null.
    n = "json_array_length(%s)" % ranked
    return ",\n  ".join(
        "(select {col} from tasks where rowid = json_extract({r}, "
        "'$[' || max({k} - 1, 0) || ']')) as {out}_p{l}".format(
            col=column, r=ranked, k=_nearest_rank(p, n), out=out, l=label)
        for p, label in PERCENTILES)


QUERIES = {q.name: q for q in (
    Query(
        "recent_failures",
        "Recent failures",
        "Tasks whose last attempt failed with no retry left, newest first, "
        "with the error. Filter by task name (blank: all tasks).",
        """select task_id, task, finished, attempts, error_type, error, fingerprint, run_id
from tasks
where status = 'failed' and """ + _task_filter() + """
order by finished desc
limit 100""",
        ("task",),
    ),
    Query(
        "failures_by_fingerprint",
        "Failures grouped by fingerprint",
        "Every error event grouped by its fingerprint (error type, normalised "
        "message and innermost frame): how often, since when, which tasks. "
        "Since: unix seconds or an ISO date (blank: all time).",
        """select fingerprint, error_type, min(error) as example_error,
  count(*) as errors, count(distinct task_id) as task_ids,
  group_concat(distinct task) as tasks,
  min(ts) as first_seen, max(ts) as last_seen,
  max(task_id) as example_task_id
from events
where signal = 'error' and fingerprint is not null and """ + _since("ts") + """
group by fingerprint
order by errors desc""",
        ("since",),
    ),
    Query(
        "task_history",
        "One task's full history",
        "Every event recorded for one task id, in order: enqueue, each "
        "attempt with its wait, duration and error, retries, the outcome.",
        """select ts, signal, attempt, retries_left, duration, wait, error_type, error,
  worker, host, pid, run_id, task, priority, eta, fingerprint, args, kwargs,
  traceback
from events
where task_seq = (select seq from tasks where task_id = :task_id)
order by ts, id""",
        ("task_id",),
    ),
    Query(
        "retry_chains",
        "Retry chains",
        "Tasks that were retried, newest first: attempts, final status (complete "
        "means a retry succeeded), total time and the error of each failed "
        "attempt. Filter by task name (blank: all tasks).",
        """select task_id, task, status, attempts, enqueued, finished,
  finished - enqueued as total_seconds, error_type, error,
  (select group_concat(e.attempt || ': ' || case when e.signal = 'locked'
                         then 'lock held'
                         else coalesce(e.error_type, '?') || ': ' || coalesce(e.error, '') end,
                       char(10))
   from events e
   where e.task_id = tasks.task_id and e.signal in ('error', 'locked')) as attempt_errors
from tasks
where attempts > 1 and """ + _task_filter() + """
order by finished desc
limit 200""",
        ("task",),
    ),
    Query(
        "slowest_tasks",
        "Slowest task runs",
        "The longest executions (seconds from executing to the terminal "
        "signal of the last attempt). Filter by task name (blank: all tasks).",
        # One branch per case, each with a WHERE its index serves: an
        # "(:task = '' or task = :task)" term would keep SQLite off the
        # (task, duration) index and walk every run time to find one task's.
        # The branch whose constant test fails costs nothing.
        """select * from (
  select task_id, task, status, duration, wait, started, finished, run_id
  from tasks
  where :task = '' and duration is not null
  order by duration desc
  limit 100
)
union all
select * from (
  select task_id, task, status, duration, wait, started, finished, run_id
  from tasks
  where task = :task and duration is not null
  order by duration desc
  limit 100
)
order by duration desc""",
        ("task",),
    ),
    Query(
        "latency_percentiles",
        "Queue wait and run time percentiles per task",
        "p50, p95 and p99 of queue wait and run time (seconds) per task name, "
        "nearest-rank, over tasks that ran and finished since :since (unix "
        "seconds or an ISO date; blank for all time).",
        # Task names by skipping through the task index (one seek per name);
        # per name, the rowids in order of wait and of run time, each from one
        # walk of a covering index; then the three ranked rows by rowid.
        # Exact, and about 3x cheaper than ranking with window functions.
        """with recursive names(task) as (
  select min(task) from tasks
  union all
  select (select min(task) from tasks where task > names.task)
  from names where names.task is not null
), ranked as materialized (
  select task,
    """ + _ranked_rowids("wait") + """ as waits,
    """ + _ranked_rowids("duration") + """ as durations
  from names
  where task is not null
)
select task, json_array_length(durations) as finished,
  """ + _percentile_values("wait", "waits", "wait") + """,
  """ + _percentile_values("duration", "durations", "run") + """
from ranked
where json_array_length(durations) > 0
order by task""",
        ("since",),
    ),
    Query(
        "throughput_per_hour",
        "Throughput per hour",
        "Enqueued, completed, failed and retried executions per hour, newest "
        "first, from the hourly roll-ups (they survive pruning). Filter by "
        "task name (blank: all tasks).",
        """select hour,
  sum(case when signal = 'complete' then count else 0 end) as completed,
  sum(case when signal = 'error' then count else 0 end) as errors,
  sum(case when signal = 'retrying' then count else 0 end) as retried,
  sum(case when signal = 'enqueued' then count else 0 end) as enqueued
from rollup_hourly
where """ + _task_filter() + """
group by hour
order by hour desc""",
        ("task",),
    ),
    Query(
        "throughput_per_minute",
        "Throughput per minute",
        "Completed and failed executions per minute, newest first, over the "
        "last :hours hours of recorded events (blank: 24). Filter by task "
        "name (blank: all tasks).",
        """with bounds as (
  select max(ts) - 3600 * coalesce(nullif(:hours, ''), 24) as since from events
)
select cast(ts / 60 as integer) * 60 as minute,
  sum(signal = 'complete') as completed,
  sum(signal = 'error') as errors
from events, bounds
where signal in ('complete', 'error') and ts >= bounds.since
  and """ + _task_filter() + """
group by minute
order by minute desc""",
        ("hours", "task"),
    ),
    Query(
        "in_flight_or_lost",
        "Tasks in flight or lost",
        "Tasks still executing, oldest first. 'lost' when the consumer run "
        "executing them has stopped, or has sent no heartbeat for :stale "
        "seconds (blank: %d): a killed consumer loses its task." % STALE_SECONDS,
        """select t.task_id, t.task, t.started, t.run_id, r.host, r.pid,
  r.stopped, r.stop_reason, r.heartbeat,
  round(""" + _NOW + """ - """ + last_beat("r") + """, 1) as heartbeat_age,
  case when """ + task_lost(_NOW, "coalesce(nullif(:stale, ''), %s)" % _STALE) + """
       then 'lost' else 'in flight' end as state
from tasks t left join runs r on r.id = t.run_id
where t.status = 'executing'
order by t.started""",
        ("stale",),
    ),
    Query(
        "recovered_and_lost",
        "Recovered and lost tasks",
        "Tasks a dead consumer left leased, newest first: 'recovered' went "
        "back on the queue, 'lost' was parked in the queue's dead-letter "
        "table after too many recoveries. run_id is the dead run; host and "
        "pid are the process that recovered it; status is the task's now. "
        "Filter by dead run (blank: all).",
        """select e.ts, e.signal, e.task_id, e.task, e.run_id, e.host, e.pid,
  e.error as reason, t.status, t.finished
from events e left join tasks t on t.task_id = e.task_id
where e.signal in ('recovered', 'lost')
  and (coalesce(:run_id, '') = '' or e.run_id = :run_id)
order by e.ts desc""",
        ("run_id",),
    ),
    Query(
        "lock_contention",
        "Lock contention",
        "Task names whose executions found their lock held (huey's 'locked' "
        "signal), most contended first: how often, for how many task ids, "
        "since when. Since: unix seconds or an ISO date (blank: all time).",
        """select task, count(*) as locked, count(distinct task_id) as task_ids,
  min(ts) as first_seen, max(ts) as last_seen
from events
where signal = 'locked' and """ + _since("ts") + """
group by +task  -- "+": read the few 'locked' rows by signal, not every row by task
order by locked desc""",
        ("since",),
    ),
    Query(
        "consumer_runs",
        "Runs and heartbeats",
        "Every process that recorded, newest first, with its last heartbeat, "
        "whether it is still beating (within :stale seconds, blank: %d), and "
        % STALE_SECONDS +
        "how many events it wrote or could not write.",
        """select id, role, host, pid, workers, worker_type, started, stopped,
  stop_reason, heartbeat, events_written, events_dropped, queue, backend,
  case when stopped is not null then 'stopped'
       when role != 'consumer' then 'not a consumer'
       when """ + run_alive(_NOW, "coalesce(nullif(:stale, ''), %s)" % _STALE) + """
       then 'running'
       else 'silent' end as state
from runs
order by started desc""",
        ("stale",),
    ),
    Query(
        "revoked_and_expired",
        "Revoked and expired tasks",
        "Tasks that never ran because they were revoked or had expired, "
        "newest first.",
        """select task_id, task, status, enqueued, eta, finished
from tasks
where status in ('revoked', 'expired')
order by coalesce(finished, enqueued) desc""",
    ),
)}


def run(conn, name, **params):
    """Run a named query on a sqlite3 connection; a list of dict rows."""
    query = QUERIES[name]
    values = {p: "" for p in query.params}
    values.update({k: ("" if v is None else v) for k, v in params.items()})
    cursor = conn.execute(query.sql, values)
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row)) for row in cursor.fetchall()]
