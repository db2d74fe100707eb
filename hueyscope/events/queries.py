"""Named SQL over the event store, shared by the static report and Datasette.

Each question is answered by one :class:`Query`. The report runs it with
:func:`run`; ``hueyscope browse`` publishes the same text as a Datasette
canned query. Parameters are SQLite named parameters (``:since``); an empty
string means "no filter", which is what Datasette sends for a blank field.

Percentiles use the nearest-rank method with window functions, so they are
computed inside SQLite without loading the rows into Python.
"""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Query:
    name: str
    title: str
    description: str
    sql: str
    params: tuple = ()


def _percentile_columns(column, alias):
    return ",\n  ".join(
        "min(case when {col}_rank >= {p} * n_{col} then {col} end) as {alias}_p{label}"
        .format(col=column, p=p, alias=alias, label=label)
        for p, label in ((0.50, 50), (0.95, 95), (0.99, 99))
    )


QUERIES = {q.name: q for q in (
    Query(
        "recent_failures",
        "Recent failures",
        "Tasks whose last attempt failed, newest first, with the error.",
        """select task_id, task, finished, attempts, error_type, error, fingerprint, run_id
from tasks
where status = 'failed'
order by finished desc
limit 100""",
    ),
    Query(
        "failures_by_fingerprint",
        "Failures grouped by fingerprint",
        "Every error event grouped by its fingerprint (error type, normalised "
        "message and innermost frame): how often, since when, which tasks.",
        """select fingerprint, error_type, min(error) as example_error,
  count(*) as errors, count(distinct task_id) as task_ids,
  group_concat(distinct task) as tasks,
  min(ts) as first_seen, max(ts) as last_seen
from events
where signal = 'error' and fingerprint is not null
group by fingerprint
order by errors desc""",
    ),
    Query(
        "task_history",
        "One task's full history",
        "Every event recorded for one task id, in order.",
        """select ts, signal, attempt, retries_left, duration, wait, error_type, error,
  worker, host, pid, run_id
from events
where task_id = :task_id
order by ts, id""",
        ("task_id",),
    ),
    Query(
        "retry_chains",
        "Retry chains",
        "Tasks that were retried: attempts, final status and last error.",
        """select task_id, task, status, attempts, enqueued, finished,
  finished - enqueued as total_seconds, error_type, error
from tasks
where attempts > 1
order by finished desc
limit 200""",
    ),
    Query(
        "slowest_tasks",
        "Slowest task runs",
        "The longest executions (seconds from executing to the terminal signal).",
        """select task_id, task, status, duration, wait, started, finished, run_id
from tasks
where duration is not null
order by duration desc
limit 100""",
    ),
    Query(
        "latency_percentiles",
        "Queue wait and run time percentiles per task",
        "p50, p95 and p99 of queue wait and run time (seconds) per task name, "
        "nearest-rank, over tasks finished since :since (unix seconds; blank "
        "for all time).",
        """with ranked as (
  select task, duration, wait,
    row_number() over (partition by task order by duration) as duration_rank,
    count(duration) over (partition by task) as n_duration,
    row_number() over (partition by task order by wait) as wait_rank,
    count(wait) over (partition by task) as n_wait
  from tasks
  where finished is not null
    and (:since = '' or finished >= cast(:since as real))
)
select task, count(*) as finished,
  """ + _percentile_columns("wait", "wait") + """,
  """ + _percentile_columns("duration", "run") + """
from ranked
group by task
order by task""",
        ("since",),
    ),
    Query(
        "throughput_per_hour",
        "Throughput per hour",
        "Completed, failed and retried executions per hour, from the hourly "
        "roll-ups (they survive pruning).",
        """select hour,
  sum(case when signal = 'complete' then count else 0 end) as completed,
  sum(case when signal = 'error' then count else 0 end) as errors,
  sum(case when signal = 'retrying' then count else 0 end) as retried,
  sum(case when signal = 'enqueued' then count else 0 end) as enqueued
from rollup_hourly
group by hour
order by hour desc""",
    ),
    Query(
        "throughput_per_minute",
        "Throughput per minute",
        "Completed and failed executions per minute over the last :hours hours "
        "of recorded events (blank: 24).",
        """with bounds as (
  select max(ts) - 3600 * coalesce(nullif(:hours, ''), 24) as since from events
)
select cast(ts / 60 as integer) * 60 as minute,
  sum(signal = 'complete') as completed,
  sum(signal = 'error') as errors
from events, bounds
where signal in ('complete', 'error') and ts >= bounds.since
group by minute
order by minute desc""",
        ("hours",),
    ),
    Query(
        "in_flight_or_lost",
        "Tasks in flight or lost",
        "Tasks still executing. 'lost' when the consumer run executing them "
        "stopped, or has sent no heartbeat for :stale seconds (blank: 60).",
        """select t.task_id, t.task, t.started, t.run_id, r.host, r.pid,
  r.stopped, r.stop_reason, r.heartbeat,
  case when r.stopped is not null
         or r.heartbeat < (select max(ts) from events) - coalesce(nullif(:stale, ''), 60)
       then 'lost' else 'in flight' end as state
from tasks t left join runs r on r.id = t.run_id
where t.status = 'executing'
order by t.started""",
        ("stale",),
    ),
    Query(
        "lock_contention",
        "Lock contention",
        "Tasks that could not run because their lock was held.",
        """select task, count(*) as locked, count(distinct task_id) as task_ids,
  min(ts) as first_seen, max(ts) as last_seen
from events
where signal = 'locked'
group by task
order by locked desc""",
    ),
    Query(
        "consumer_runs",
        "Runs and heartbeats",
        "Every process that recorded, newest first, with its last heartbeat "
        "and how many events it wrote or could not write.",
        """select id, role, host, pid, workers, worker_type, started, stopped,
  stop_reason, heartbeat, events_written, events_dropped, queue, backend
from runs
order by started desc""",
    ),
    Query(
        "revoked_and_expired",
        "Revoked and expired tasks",
        "Tasks that never ran because they were revoked or had expired.",
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
