"""The writer's SQL: every statement it runs, and how it runs them in bulk.

The columns of the events and tasks rows come from
:mod:`hueyscope.events.columns`, the one place they are listed in order;
the rows themselves are built by :mod:`hueyscope.events.rows`.
"""
import itertools

from hueyscope.events.columns import EVENT, TASK


def _placeholders(n):
    return "(" + ", ".join(["?"] * n) + ")"


# A prefix, the VALUES group of one row and a suffix: run by insert_many
# with as many groups as rows.
INSERT_EVENTS = ("insert into events (%s)" % ", ".join(EVENT),
                 _placeholders(len(EVENT)), "")

# One statement for every signal, applied in order. Signals from different
# processes can arrive out of order (a producer flushes its 'enqueued' after
# the consumer already finished the task), so status only moves forward in
# time, and a late 'ready' still yields the wait of an execution already seen.
UPSERT_TASK = ("insert into tasks (%s)" % ", ".join(TASK),
               _placeholders(len(TASK)), """
on conflict (task_id) do update set
  task = coalesce(tasks.task, excluded.task),
  queue = coalesce(tasks.queue, excluded.queue),
  status = case when excluded.status = 'waiting'
                  or excluded.updated < coalesce(tasks.updated, 0)
                then tasks.status else excluded.status end,
  enqueued = case when tasks.enqueued is null then excluded.enqueued
                  when excluded.enqueued is null then tasks.enqueued
                  else min(tasks.enqueued, excluded.enqueued) end,
  ready = case when excluded.ready is not null
                and excluded.updated >= coalesce(tasks.updated, 0)
               then excluded.ready else coalesce(tasks.ready, excluded.ready) end,
  wait = case when excluded.wait is not null then excluded.wait
              when excluded.started is not null
              then max(excluded.started - tasks.ready, 0.0)
              when tasks.wait is null and tasks.started is not null
                   and excluded.ready is not null
                   and tasks.started >= excluded.ready
              then tasks.started - excluded.ready
              else tasks.wait end,
  started = coalesce(excluded.started, tasks.started),
  finished = case when excluded.finished is not null then excluded.finished
                  when excluded.started is not null then null
                  else tasks.finished end,
  attempts = tasks.attempts + excluded.attempts,
  duration = coalesce(excluded.duration, tasks.duration),
  error_type = coalesce(excluded.error_type, tasks.error_type),
  error = coalesce(excluded.error, tasks.error),
  fingerprint = coalesce(excluded.fingerprint, tasks.fingerprint),
  priority = coalesce(excluded.priority, tasks.priority),
  eta = coalesce(excluded.eta, tasks.eta),
  parent_id = case when excluded.parent_id is not null
                    and excluded.updated >= coalesce(tasks.updated, 0)
                   then excluded.parent_id
                   else coalesce(tasks.parent_id, excluded.parent_id) end,
  run_id = coalesce(excluded.run_id, tasks.run_id),
  updated = max(coalesce(tasks.updated, 0), excluded.updated)
returning task_id, seq, attempts, wait, started""")

# Executions of a task that began before a given time.
EXECUTIONS_BEFORE = """select count(*) from events
where task_seq = ? and +signal = 'executing' and ts < ?"""

# Executions recorded before their task's 'ready' time (a producer that
# flushed late) get their wait when it arrives.
FILL_LATE_WAIT = """update events set wait = ?
where task_seq = ? and +signal = 'executing' and wait is null"""

UPSERT_ROLLUP = ("""insert into rollup_hourly (hour, task, signal, count,
  duration_sum, duration_max, wait_sum)""", "(?, ?, ?, ?, ?, ?, ?)", """
on conflict (hour, task, signal) do update set
  count = count + excluded.count,
  duration_sum = duration_sum + excluded.duration_sum,
  duration_max = max(duration_max, excluded.duration_max),
  wait_sum = wait_sum + excluded.wait_sum""")

INSERT_SAMPLE = """insert into queue_samples (ts, queue, pending, scheduled,
  in_flight, run_id) values (?, ?, ?, ?, ?, ?)"""

# Columns a runs row written by an older recorder (or a test) may lack.
RUN_DEFAULTS = {"periodic": None}

# The run's own process states every column but the counters, which a
# worker process may have started (COUNT_RUN_EVENTS) before it wrote them.
UPSERT_RUN = """insert into runs (id, role, host, pid, started, workers,
  worker_type, queue, backend, versions, app, heartbeat, stopped, stop_reason,
  periodic)
values (:id, :role, :host, :pid, :started, :workers, :worker_type, :queue,
  :backend, :versions, :app, :heartbeat, :stopped, :stop_reason, :periodic)
on conflict (id) do update set
  role = excluded.role, host = excluded.host, pid = excluded.pid,
  started = excluded.started, workers = excluded.workers,
  worker_type = excluded.worker_type, queue = excluded.queue,
  backend = excluded.backend, versions = excluded.versions,
  app = excluded.app, heartbeat = excluded.heartbeat,
  stopped = excluded.stopped, stop_reason = excluded.stop_reason,
  periodic = excluded.periodic"""

# A worker process counts its events into its consumer's run, whose row the
# consumer may not have written yet: then the count starts the row, with
# what the run id says (host:pid:started), and UPSERT_RUN completes it.
COUNT_RUN_EVENTS = """insert into runs (id, role, host, pid, started,
  events_written, events_dropped) values (?, 'consumer', ?, ?, ?, ?, ?)
on conflict (id) do update set
  events_written = events_written + excluded.events_written,
  events_dropped = events_dropped + excluded.events_dropped"""



def upsert_tasks(conn, rows):
    """Apply UPSERT_TASK to ``rows``; returns task id -> (seq, attempts, wait, started)."""
    prefix, values, suffix = UPSERT_TASK
    current = {}
    for i in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[i:i + ROWS_PER_STATEMENT]
        sql = multi_row_sql(prefix, values, suffix, len(chunk))
        for task_id, *stored in conn.execute(sql, flat(chunk)):
            current[task_id] = stored
    return current


ROWS_PER_STATEMENT = 64


def insert_many(conn, statement, rows):
    """Insert ``rows`` with multi-row VALUES statements, 64 rows a step.

    sqlite3's executemany releases and re-takes the GIL around every row's
    step; in a consumer that is a GIL handoff per event, each forcing a
    worker thread to switch. One step per 64 rows keeps the writer out of
    the workers' way (measured with ``hueyscope bench``: the drain rate with
    the recorder went from 0.86x to 0.89-0.93x of bare SqliteHuey).
    """
    if not rows:
        return
    prefix, values, suffix = statement
    full = len(rows) - len(rows) % ROWS_PER_STATEMENT
    if full:
        sql = multi_row_sql(prefix, values, suffix, ROWS_PER_STATEMENT)
        conn.executemany(sql, (
            flat(rows[i:i + ROWS_PER_STATEMENT])
            for i in range(0, full, ROWS_PER_STATEMENT)))
    rest = rows[full:]
    if rest:
        conn.execute(multi_row_sql(prefix, values, suffix, len(rest)),
                     flat(rest))


_SQL_CACHE = {}


def flat(rows):
    """One statement's parameters: the rows' values, one after the other."""
    return list(itertools.chain.from_iterable(rows))


def multi_row_sql(prefix, values, suffix, n):
    key = (prefix, n)
    sql = _SQL_CACHE.get(key)
    if sql is None:
        sql = _SQL_CACHE[key] = "%s values %s %s" % (
            prefix, ", ".join([values] * n), suffix)
    return sql
