"""The recorder: every huey signal of a process, written to the event store.

The signal handler runs inside huey's workers, so it does as little as it
can: it reads a few attributes of the task, appends one tuple to an
in-memory buffer and returns. It never raises into huey. A writer thread per
process drains the buffer in batches, one transaction per batch, through one
connection that it opens itself -- lazily, after any fork, so process
workers each get their own.

A batch that cannot be written (database locked, disk full, read-only file)
is retried with backoff. Events that finally cannot be written are counted,
logged, and the count is stored in the ``runs`` row as soon as the store
accepts writes again: nothing is dropped silently. A graceful stop (end_run,
atexit, huey's shutdown hooks) flushes everything; SIGKILL loses at most one
flush interval.
"""
import atexit
import collections
import hashlib
import json
import logging
import os
import re
import socket
import sqlite3
import sys
import threading
import time
import traceback
import weakref

from hueyscope.events import schema

logger = logging.getLogger("hueyscope.recorder")

DEFAULT_REDACT = ("password", "token", "secret", "api_key", "authorization")
REDACTED = "***"

# Signals after which a task will not run again unless huey retries it.
FINAL_STATUS = {
    "complete": "complete",
    "error": "failed",
    "locked": "locked",
    "revoked": "revoked",
    "expired": "expired",
    "canceled": "canceled",
    "interrupted": "interrupted",
    "timeout": "timeout",
    "rate-limited": "rate-limited",
}
# Signals huey emits from inside its except block: the exception is current.
EXC_INFO_SIGNALS = frozenset(("timeout", "interrupted", "locked", "canceled",
                              "rate-limited"))
STATUS = dict(FINAL_STATUS, enqueued="enqueued", scheduled="scheduled",
              executing="executing", retrying="retrying")

_recorders = weakref.WeakKeyDictionary()  # huey instance -> Recorder
_attach_lock = threading.Lock()


def attach(huey, events=None, **options):
    """Install the recorder on ``huey`` and return it (idempotent per instance).

    ``events`` is the event store path (default: the configured one, see
    :class:`hueyscope.settings.Settings`). Options: ``capture_args`` (False:
    store no args/kwargs), ``max_arg_chars``, ``redact`` (key names whose
    values are stored as ``***``), ``flush_interval`` (seconds),
    ``max_buffer`` (events held in memory while the store is unwritable),
    ``give_up_after`` (seconds a failing batch is retried before its events
    are counted as dropped).
    """
    with _attach_lock:
        recorder = _recorders.get(huey)
        if recorder is None:
            # Unset options come from the one place configuration enters, so
            # an app that attaches at import follows `--events`/`--no-args`.
            from hueyscope.settings import Settings

            settings = Settings.build()
            if events is None:
                events = settings.events
            options.setdefault("capture_args", not settings.no_args)
            recorder = Recorder(huey, events, **options)
            _recorders[huey] = recorder
        return recorder


def recorder_for(huey):
    """The recorder attached to ``huey``, or None."""
    return _recorders.get(huey)


_CONTAINERS = (dict, list, tuple)


def _redact(value, keys, depth=0):
    """A copy of ``value`` with the values of secret-looking keys replaced."""
    if depth > 8:
        return value
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and k.lower() in keys
                    else _redact(v, keys, depth + 1)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact(v, keys, depth + 1) for v in value]
    return value


def _needs_redaction(values):
    # The common case -- a few scalars -- needs no copy: only a container
    # can hold a key to redact.
    for v in values:
        if isinstance(v, _CONTAINERS):
            return True
    return False


_encode = json.JSONEncoder(default=repr, ensure_ascii=False).encode


def _dump(value, keys, limit):
    """JSON text of ``value`` with redaction; non-JSON values as repr; truncated."""
    try:
        if isinstance(value, dict):
            if value and (_needs_redaction(value.values()) or any(
                    isinstance(k, str) and k.lower() in keys for k in value)):
                value = _redact(value, keys)
        elif _needs_redaction(value):
            value = _redact(value, keys)
        text = _encode(value)
    except Exception:  # a repr() that raises, a recursive structure...
        text = json.dumps(repr(value))
    if limit and len(text) > limit:
        text = text[:limit] + "...[truncated %d chars]" % (len(text) - limit)
    return text


_NORMALISE = (
    (re.compile(r"0x[0-9a-fA-F]+"), "0x?"),
    (re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F-]{27,}"), "<uuid>"),
    (re.compile(r"'[^']*'|\"[^\"]*\""), "<str>"),
    (re.compile(r"\d+(\.\d+)?"), "<n>"),
)


def fingerprint(error_type, message, tb):
    """Stable hash of error type + normalised message + innermost frame.

    Numbers, quoted strings, hex addresses and uuids are normalised away so
    "timeout after 3.2s" and "timeout after 4.7s" group together.
    """
    for pattern, repl in _NORMALISE:
        message = pattern.sub(repl, message or "")
    frame = ""
    if tb is not None:
        last = traceback.extract_tb(tb)[-1:]
        if last:
            frame = "%s:%s" % (os.path.basename(last[0].filename), last[0].name)
    key = "\n".join((error_type or "", message[:500], frame))
    return hashlib.sha1(key.encode("utf-8", "replace")).hexdigest()[:16]


def _versions():
    import huey

    from hueyscope import __name__ as _  # noqa: F401

    try:
        from importlib.metadata import version

        ours = version("hueyscope")
    except Exception:
        ours = "unknown"
    return json.dumps({
        "hueyscope": ours, "huey": huey.__version__,
        "python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version,
    })


def _backend(huey):
    name = type(huey.storage).__name__
    return {"SqliteStorage": "sqlite", "DurableSqliteStorage": "sqlite",
            "RedisStorage": "redis", "PriorityRedisStorage": "redis",
            "MemoryStorage": "memory"}.get(name, name)


class _Marker:
    """Placed in the buffer by flush(); set once everything before it is written."""

    __slots__ = ("done",)

    def __init__(self):
        self.done = threading.Event()


class Recorder:
    """Buffers huey signals and writes them to the event store from a thread."""

    def __init__(self, huey, events, capture_args=True, max_arg_chars=2000,
                 redact=DEFAULT_REDACT, flush_interval=0.2, max_buffer=200_000,
                 give_up_after=60.0, batch_size=5000):
        self.huey = huey
        self.path = os.fspath(events)
        self.capture_args = capture_args
        self.max_arg_chars = max_arg_chars
        self.redact = frozenset(k.lower() for k in redact)
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self.give_up_after = give_up_after
        self.batch_size = batch_size
        self.queue_name = huey.name
        self.host = socket.gethostname()
        # Validate now, in the caller's process, so a foreign file is a clear
        # error at attach time rather than a stream of failed flushes later.
        schema.check_event_store(self.path, must_exist=False)
        self._reset_process_state()
        self.run_id = None
        self._run_pid = None
        self.role = None
        huey._signal.connect(self._on_signal)
        huey.on_startup(name="hueyscope_recorder_startup")(self._on_worker_startup)
        huey.on_shutdown(name="hueyscope_recorder_shutdown")(self._on_worker_shutdown)
        os.register_at_fork(after_in_child=self._after_fork_in_child)
        atexit.register(self._at_exit)

    # -- per-process state -------------------------------------------------

    def _reset_process_state(self):
        self.pid = os.getpid()
        self._buffer = collections.deque()
        self._wake = threading.Event()
        self._state_lock = threading.Lock()
        self._thread = None
        self._conn = None
        self._started = {}  # task id -> monotonic time it began executing
        self._written = 0
        self._dropped = 0
        self._dropped_unrecorded = 0  # dropped but not yet added to runs row
        self._written_unrecorded = 0
        self._run_row = None  # dict written to runs when it changes
        self._run_row_dirty = False
        self._samples = []
        self._ended = False
        self._runs_begun = 0

    def _after_fork_in_child(self):
        # The buffer and thread belong to the parent, which still writes them;
        # a forked worker starts empty, with its own connection and thread,
        # and keeps recording under the parent's run.
        self._reset_process_state()
        # Keep the parent's run: a worker process records under it, and the
        # parent alone writes the runs row.
        self._run_pid = self.pid if self.run_id is not None else None

    # -- the signal handler (hot path) -------------------------------------

    def _on_signal(self, signal, task, *args, **kwargs):
        try:
            now = time.time()
            duration = None
            if signal == "executing":
                self._started[task.id] = time.monotonic()
            elif signal in schema.TERMINAL_SIGNALS:
                start = self._started.pop(task.id, None)
                if start is not None:
                    duration = time.monotonic() - start
            exc = args[0] if args else kwargs.get("exc")
            if exc is None and signal in EXC_INFO_SIGNALS:
                exc = sys.exc_info()[1]
            item = (now, signal, task, task.retries, task.priority, task.eta,
                    duration, exc, threading.current_thread().name)
            if len(self._buffer) >= self.max_buffer:
                self._count_dropped(1, "buffer full")
                return
            self._buffer.append(item)
            if self._thread is None:
                self._start_writer()
        except Exception:  # never raise into huey
            self._count_dropped(1, "handler error")
            logger.exception("hueyscope recorder: could not buffer %s", signal)

    def _count_dropped(self, n, why):
        with self._state_lock:
            self._dropped += n
            self._dropped_unrecorded += n
        logger.error("hueyscope recorder: %d event(s) not recorded (%s); "
                     "%d dropped in this process so far", n, why, self._dropped)

    # -- run lifecycle -------------------------------------------------------

    def begin_run(self, role="consumer", workers=None, worker_type=None,
                  app=None):
        """Start (or restate) the ``runs`` row of this process; returns its id.

        After end_run, this starts a new run: a consumer stopped and started
        again in one process (a notebook) gets one row per run.
        """
        with self._state_lock:
            if self.run_id is None or self.pid != self._run_pid or self._ended:
                started = time.time()
                self._runs_begun += 1
                self.run_id = "%s:%d:%d" % (self.host, self.pid, int(started))
                if self._runs_begun > 1:
                    self.run_id += ".%d" % self._runs_begun
                self._run_pid = self.pid
                self._ended = False
                self._run_row = {
                    "id": self.run_id, "role": role, "host": self.host,
                    "pid": self.pid, "started": started, "workers": workers,
                    "worker_type": worker_type, "queue": self.queue_name,
                    "backend": _backend(self.huey), "versions": _versions(),
                    "app": app, "heartbeat": started,
                    "stopped": None, "stop_reason": None,
                }
            elif self._run_row is not None:
                self._run_row.update(
                    {k: v for k, v in dict(role=role, workers=workers,
                                           worker_type=worker_type,
                                           app=app).items() if v is not None})
            self.role = role
            self._run_row_dirty = True
        self._ensure_writer()
        return self.run_id

    def _ensure_run(self):
        # A process that records without begin_run (a producer, or a worker
        # of the stock huey_consumer) gets a run row on its first event.
        if self.run_id is None or self._run_pid != self.pid:
            self.begin_run(role=self.role or "producer")

    def heartbeat(self, pending=None, scheduled=None, in_flight=None):
        """Note that this run is alive, with an optional queue sample."""
        now = time.time()
        with self._state_lock:
            if self._run_row is not None:
                self._run_row["heartbeat"] = now
                self._run_row_dirty = True
            if pending is not None or scheduled is not None:
                self._samples.append((now, self.queue_name, pending, scheduled,
                                      in_flight, self.run_id))
        self._ensure_writer()
        self._wake.set()

    def end_run(self, reason="graceful", timeout=30.0):
        """Flush every buffered event and mark this run stopped.

        Safe to call twice. Returns True when everything was written.
        """
        if self._ended and self._run_pid == self.pid:
            return self.flush(timeout)
        self._ensure_run()
        with self._state_lock:
            if self._run_row is not None:
                self._run_row["stopped"] = time.time()
                self._run_row["stop_reason"] = reason
                self._run_row_dirty = True
            self._ended = True
        return self.flush(timeout)

    def flush(self, timeout=10.0):
        """Block until everything buffered so far is written (or given up)."""
        if self._thread is None and not self._buffer and not self._run_row_dirty \
                and not self._samples:
            return True
        marker = _Marker()
        self._buffer.append(marker)
        self._ensure_writer()
        self._wake.set()
        return marker.done.wait(timeout)

    def stats(self):
        return {"written": self._written, "dropped": self._dropped,
                "pending": sum(1 for i in list(self._buffer)
                               if not isinstance(i, _Marker))}

    def _on_worker_startup(self):
        # huey runs startup hooks in every worker; with the stock
        # huey_consumer this is how we learn this process consumes.
        if self.run_id is None or self._run_pid != os.getpid():
            self.begin_run(role="consumer")

    def _on_worker_shutdown(self):
        self.flush(timeout=10.0)

    def _at_exit(self):
        if self.pid != os.getpid():
            return
        if self.run_id is not None and not self._ended:
            self.end_run(reason="exit", timeout=15.0)
        elif self._buffer:
            self.flush(timeout=15.0)

    # -- the writer thread ---------------------------------------------------

    def _ensure_writer(self):
        if self._thread is None:
            self._start_writer()

    def _start_writer(self):
        with self._state_lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._writer_loop, name="hueyscope-writer", daemon=True)
            self._thread.start()

    def _writer_loop(self):
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self._drain()
            except Exception:  # keep the thread alive whatever happens
                logger.exception("hueyscope recorder: writer error")
                time.sleep(self.flush_interval)

    def _drain(self):
        while True:
            batch, markers = [], []
            buffer = self._buffer
            while buffer and len(batch) < self.batch_size:
                item = buffer.popleft()
                if isinstance(item, _Marker):
                    markers.append(item)
                    if batch:
                        break
                else:
                    batch.append(item)
            if not batch and not self._run_row_dirty and not self._samples \
                    and not self._dropped_unrecorded:
                for m in markers:
                    m.done.set()
                return
            if batch:
                self._ensure_run()
            self._write_with_retry(batch)
            for m in markers:
                m.done.set()
            if not buffer:
                return

    def _write_with_retry(self, batch):
        deadline = time.monotonic() + self.give_up_after
        delay = 0.05
        rows = None
        while True:
            try:
                if rows is None:
                    rows = self._rows(batch)
                self._write(rows)
                return
            except Exception as exc:
                self._close_conn()
                if time.monotonic() >= deadline:
                    self._count_dropped(len(batch), "event store unwritable: %s" % exc)
                    return
                logger.warning("hueyscope recorder: flush failed (%s), "
                               "retrying in %.2fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _connection(self):
        if self._conn is None:
            db = schema.open_event_store(self.path)
            self._conn = db.conn
            self._conn.isolation_level = None  # we BEGIN ourselves
            # Index pages of random task ids are rewritten batch after batch:
            # checkpointing every 40 MB of WAL instead of 4 MB, with the
            # pages cached, writes each of them back once, not ten times.
            self._conn.execute("pragma wal_autocheckpoint=10000")
            self._conn.execute("pragma cache_size=-32000")
        return self._conn

    def _close_conn(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None

    # -- turning buffered signals into rows --------------------------------

    def _rows(self, batch):
        """(events rows, tasks rows, rollup rows, late task ids) for one batch.

        All of a batch's signals for one task fold into a single ``tasks``
        row (see :func:`_fold`), so the table and its indexes are touched once
        per task per batch, not once per signal.
        """
        run_id = self.run_id
        host, pid, queue = self.host, self.pid, self.queue_name
        capture, keys, limit = self.capture_args, self.redact, self.max_arg_chars
        events, late = [], []
        tasks = {}
        rollup = {}
        for ts, signal, task, retries, priority, eta, duration, exc, worker in batch:
            task_id = task.id
            name = task.name
            eta_ts = _timestamp(eta) if eta is not None else None
            error_type = error = tb_text = fp = None
            if exc is not None:
                error_type = type(exc).__name__
                error = str(exc)[:4000]
                tb = exc.__traceback__
                tb_text = "".join(traceback.format_exception(
                    type(exc), exc, tb))[-20000:]
                fp = fingerprint(error_type, error, tb)
            # Arguments do not change between signals: store them where a
            # reader looks for them (what was enqueued, what ran, what
            # failed), not on every row.
            if capture and (signal in ("enqueued", "executing")
                            or exc is not None):
                args = _dump(task.args, keys, limit)
                kwargs = _dump(task.kwargs, keys, limit)
            else:
                args = kwargs = None

            executing = signal == "executing"
            ready = max(ts, eta_ts or 0) if signal in ("enqueued", "scheduled") else None
            finished = ts if signal in FINAL_STATUS else None
            row = [task_id, name, queue, STATUS[signal],
                   ts if signal == "enqueued" else None, ready,
                   ts if executing else None, finished, 1 if executing else 0,
                   duration, error_type, error, fp, priority, eta_ts, None,
                   run_id if (executing or finished) else None, ts, None]
            current = tasks.get(task_id)
            if current is None:
                tasks[task_id] = row
            else:
                _fold(current, row)
                row = current
            wait = row[18] if executing else None
            # Executions of this task so far in this batch (plus one for the
            # execution an enqueue or schedule leads to); made absolute in
            # SQL once the batch's total is known -- see ATTEMPTS.
            executions = row[8] + (signal in ("enqueued", "scheduled"))
            events.append([ts, run_id, queue, task_id, name, signal,
                           executions, retries, priority, eta_ts, duration,
                           wait, error_type, error, tb_text, fp, args, kwargs,
                           host, pid, worker])

            if signal == "enqueued":
                late.append(task_id)
                # A pipeline: its later steps exist now, waiting on this one.
                parent, child = task, task.on_complete
                while child is not None:
                    waiting = [child.id, child.name, queue, "waiting", None, None,
                               None, None, 0, None, None, None, None,
                               child.priority, None, parent.id, None, ts, None]
                    if child.id in tasks:
                        _fold(tasks[child.id], waiting)
                    else:
                        tasks[child.id] = waiting
                    parent, child = child, child.on_complete

            key = ((ts // 3600) * 3600, name, signal)
            agg = rollup.get(key)
            if agg is None:
                agg = rollup[key] = [0, 0.0, 0.0]
            agg[0] += 1
            if duration is not None:
                agg[1] += duration
                if duration > agg[2]:
                    agg[2] = duration
        for event in events:
            event[6] -= tasks[event[3]][8]
        rollups = [(h, t, s, a[0], a[1], a[2], 0.0)
                   for (h, t, s), a in rollup.items()]
        return events, list(tasks.values()), rollups, late

    def _write(self, rows):
        events, tasks, rollups, late = rows
        conn = self._connection()
        with self._state_lock:
            run_row = dict(self._run_row) if self._run_row_dirty and self._run_row else None
            samples, self._samples = self._samples, []
            dropped = self._dropped_unrecorded
        try:
            conn.execute("begin immediate")
            if run_row is not None:
                conn.execute(UPSERT_RUN, run_row)
            if events:
                first = conn.execute(
                    "select coalesce(max(id), 0) + 1 from events").fetchone()[0]
                _insert_many(conn, INSERT_EVENTS, events)
                _insert_many(conn, UPSERT_TASK, tasks)
                _insert_many(conn, UPSERT_ROLLUP, rollups)
                conn.execute(ATTEMPTS, (first,))
                conn.execute(FILL_WAIT, (first,))
                if late:
                    conn.execute(FILL_LATE_WAIT, (json.dumps(late),))
                conn.execute(ROLLUP_WAIT, (first,))
            if samples:
                conn.executemany(INSERT_SAMPLE, samples)
            if self.run_id is not None and (events or dropped):
                conn.execute(
                    "update runs set events_written = events_written + ?, "
                    "events_dropped = events_dropped + ? where id = ?",
                    (len(events), dropped, self.run_id))
            conn.execute("commit")
        except BaseException:
            with self._state_lock:
                self._samples[:0] = samples
            try:
                conn.execute("rollback")
            except Exception:
                pass
            raise
        with self._state_lock:
            if run_row is not None and self._run_row == run_row:
                self._run_row_dirty = False
            self._dropped_unrecorded -= dropped
            self._written += len(events)


ROWS_PER_STATEMENT = 64


def _insert_many(conn, statement, rows):
    """Insert ``rows`` with multi-row VALUES statements, 64 rows a step.

    sqlite3's executemany releases and re-takes the GIL around every row's
    step; in a consumer that is a GIL handoff per event, each forcing a
    worker thread to switch. One step per 64 rows keeps the writer out of
    the workers' way (measured: the drain rate with the recorder went from
    0.89x to the figure in the README).
    """
    if not rows:
        return
    prefix, values, suffix = statement
    full = len(rows) - len(rows) % ROWS_PER_STATEMENT
    if full:
        sql = _multi_row_sql(prefix, values, suffix, ROWS_PER_STATEMENT)
        conn.executemany(sql, (
            [v for row in rows[i:i + ROWS_PER_STATEMENT] for v in row]
            for i in range(0, full, ROWS_PER_STATEMENT)))
    rest = rows[full:]
    if rest:
        conn.execute(_multi_row_sql(prefix, values, suffix, len(rest)),
                     [v for row in rest for v in row])


_SQL_CACHE = {}


def _multi_row_sql(prefix, values, suffix, n):
    key = (prefix, n)
    sql = _SQL_CACHE.get(key)
    if sql is None:
        sql = _SQL_CACHE[key] = "%s values %s %s" % (
            prefix, ", ".join([values] * n), suffix)
    return sql


def _fold(row, new):
    """Fold a later signal's tasks row into an earlier one of the same batch.

    Applying the folded row with UPSERT_TASK gives what applying both rows
    in order would: first non-null for names and parent, earliest enqueue,
    latest for times, status and errors, attempts summed, ``finished``
    cleared by a later start, and the wait of an execution whose ready time
    is in this batch computed here.
    """
    for i in (1, 2, 15):
        if row[i] is None:
            row[i] = new[i]
    if new[3] != "waiting":
        row[3] = new[3]
    if new[4] is not None and (row[4] is None or new[4] < row[4]):
        row[4] = new[4]
    if new[6] is not None:
        row[18] = new[6] - row[5] if row[5] is not None else None
        row[6] = new[6]
        row[7] = None
    if new[5] is not None:
        row[5] = new[5]
    if new[7] is not None:
        row[7] = new[7]
    row[8] += new[8]
    for i in (9, 10, 11, 12, 13, 14, 16):
        if new[i] is not None:
            row[i] = new[i]
    if new[17] > row[17]:
        row[17] = new[17]


def _timestamp(value):
    """huey etas are naive UTC datetimes (utc=True); return unix seconds."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    import calendar

    return calendar.timegm(value.utctimetuple()) + value.microsecond / 1e6


# Statements for _insert_many: (insert ..., one row's placeholders, suffix).
INSERT_EVENTS = ("""insert into events (ts, run_id, queue, task_id, task, signal,
  attempt, retries_left, priority, eta, duration, wait, error_type, error,
  traceback, fingerprint, args, kwargs, host, pid, worker)""",
                 "(" + ", ".join(["?"] * 21) + ")", "")

# One statement for every signal, applied in order. Signals from different
# processes can arrive out of order (a producer flushes its 'enqueued' after
# the consumer already finished the task), so status only moves forward in
# time, and a late 'ready' still yields the wait of an execution already seen.
UPSERT_TASK = ("""insert into tasks (task_id, task, queue, status, enqueued, ready,
  started, finished, attempts, duration, error_type, error, fingerprint,
  priority, eta, parent_id, run_id, updated, wait)""",
               "(" + ", ".join(["?"] * 19) + ")", """
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
              when excluded.started is not null then excluded.started - tasks.ready
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
  parent_id = coalesce(tasks.parent_id, excluded.parent_id),
  run_id = coalesce(excluded.run_id, tasks.run_id),
  updated = max(coalesce(tasks.updated, 0), excluded.updated)""")

# The wait of an execution is known once its task row has a 'ready' time:
# copy it onto executing events still missing it (this batch's, and older
# ones whose producer flushed late).
# attempt counts executions, whatever set the retries (the task's default,
# the call, RetryTask): the batch holds each event's offset from its task's
# execution count, which the tasks row now has, across processes too.
ATTEMPTS = """update events set attempt = attempt + coalesce(
    (select t.attempts from tasks t where t.task_id = events.task_id), 0)
where id >= ?"""

FILL_WAIT = """update events set wait = (
    select t.wait from tasks t where t.task_id = events.task_id)
where id >= ? and +signal = 'executing' and wait is null"""

FILL_LATE_WAIT = """update events set wait = (
    select t.wait from tasks t where t.task_id = events.task_id)
where +signal = 'executing' and wait is null and task_id in (
    select task_id from tasks
    where task_id in (select value from json_each(?)) and started is not null)"""

ROLLUP_WAIT = """insert into rollup_hourly (hour, task, signal, count,
  duration_sum, duration_max, wait_sum)
select cast(ts / 3600 as integer) * 3600, task, 'executing', 0, 0, 0, sum(wait)
from events where id >= ? and signal = 'executing' and wait is not null
group by 1, 2
on conflict (hour, task, signal) do update set
  wait_sum = wait_sum + excluded.wait_sum"""

UPSERT_ROLLUP = ("""insert into rollup_hourly (hour, task, signal, count,
  duration_sum, duration_max, wait_sum)""", "(?, ?, ?, ?, ?, ?, ?)", """
on conflict (hour, task, signal) do update set
  count = count + excluded.count,
  duration_sum = duration_sum + excluded.duration_sum,
  duration_max = max(duration_max, excluded.duration_max),
  wait_sum = wait_sum + excluded.wait_sum""")

INSERT_SAMPLE = """insert into queue_samples (ts, queue, pending, scheduled,
  in_flight, run_id) values (?, ?, ?, ?, ?, ?)"""

UPSERT_RUN = """insert into runs (id, role, host, pid, started, workers,
  worker_type, queue, backend, versions, app, heartbeat, stopped, stop_reason)
values (:id, :role, :host, :pid, :started, :workers, :worker_type, :queue,
  :backend, :versions, :app, :heartbeat, :stopped, :stop_reason)
on conflict (id) do update set
  role = excluded.role, workers = excluded.workers,
  worker_type = excluded.worker_type, app = excluded.app,
  heartbeat = excluded.heartbeat, stopped = excluded.stopped,
  stop_reason = excluded.stop_reason"""
