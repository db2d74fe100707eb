"""The recorder: every huey signal of a process, written to the event store.

The signal handler runs inside huey's workers, so it does as little as it
can: it reads a few attributes of the task, appends one tuple to an
in-memory buffer and returns. It never raises into huey. A writer thread per
process drains the buffer in batches and hands each to a writer process of
its own (:mod:`hueyscope.events.writer_process`), which writes it in one
transaction; both start lazily, after any fork, so process workers each get
their own. The recording process never opens the store itself: a fault of
SQLite's memory map of it is SIGBUS, and it kills the writer process, which
is replaced, not the user's process.

A batch that cannot be written (database locked, disk full, read-only file)
is retried with backoff. Events that finally cannot be written are counted,
logged, and the count is stored in the ``runs`` row as soon as the store
accepts writes again: nothing is dropped silently. A value the store cannot
take as it is (an argument whose repr raises, a lone surrogate in an error
message) is stored in a safe form (:mod:`hueyscope.storable`); a row the
store still refuses is left out alone, counted and logged, never its batch.
A graceful stop (end_run, atexit, huey's shutdown hooks) flushes everything;
SIGKILL loses at most one flush interval.
"""
import atexit
import collections
import logging
import multiprocessing
import multiprocessing.util
import os
import socket
import sqlite3
import sys
import threading
import time
import weakref

from hueyscope import settings as _settings
from hueyscope.events import (hooks, run_facts, schema, stock, task_notes,
                              writer, writer_process)
from hueyscope.events.capture import plain
from hueyscope.events.columns import CAPTURED
from hueyscope.readonly import sqlite_uri
from hueyscope.redaction import Redaction

logger = logging.getLogger("hueyscope.recorder")

DROP_LOG_INTERVAL = 10  # seconds between log lines about dropped events
AUTO_HEARTBEAT = 2.0  # seconds: a consumer run nobody heartbeats beats itself

# Signals huey emits from inside its except block: the exception is current.
EXC_INFO_SIGNALS = frozenset(("timeout", "interrupted", "locked", "canceled",
                              "rate-limited"))
_recorders = weakref.WeakKeyDictionary()  # huey instance -> Recorder
_inherited_stores = []  # a forked child's copies of its parent's connections
_attach_lock = threading.Lock()


def attach(huey, events=None, **options):
    """Install the recorder on ``huey`` and return it (idempotent per instance).

    ``events`` is the event store path (default: the configured one, see
    :class:`hueyscope.settings.Settings`). Options: ``capture_args`` (False:
    store no args/kwargs), ``max_arg_chars``, ``redact`` (key names added
    to the redaction's defaults, ``-name`` to drop one, as a list or the
    ``--redact`` text; see :mod:`hueyscope.redaction`), ``flush_interval`` (seconds),
    ``max_buffer`` (events held in memory while the store is unwritable),
    ``give_up_after`` (seconds a failing batch is retried before its events
    are counted as dropped), ``writer_process`` (True, the default: write
    through a child process, see :mod:`hueyscope.events.writer_process`;
    False: from the writer thread itself, which leaves this process exposed
    to faults of the store's memory map -- for benchmarks and tests).
    """
    with _attach_lock:
        recorder = _recorders.get(huey)
        if recorder is None:
            # Unset options come from the one place configuration enters, so
            # an app that attaches at import follows `--events`, `--no-args`,
            # `--max-arg-chars` and `--redact`.
            settings = _settings.Settings.build()
            if events is None:
                events = settings.events
            options.setdefault("capture_args", not settings.no_args)
            options.setdefault("max_arg_chars", settings.max_arg_chars)
            options.setdefault("redact", settings.redact)
            recorder = Recorder(huey, events, **options)
            _recorders[huey] = recorder
            if getattr(huey.storage, "leased", False):
                _tell_the_queue(huey, recorder)
        return recorder


def _tell_the_queue(huey, recorder):
    """What a leased queue learns from its recorder (the queue never imports it).

    Its run id, for the holder row and the outbox; to keep its outbox of
    outcomes, so the record can be put right after a crash; and to
    reconcile after each recovery it runs from the dequeue path.
    """
    from hueyscope.events.reconcile import reconcile

    def run_id():
        return recorder.run_id if recorder.pid == os.getpid() else None

    huey.run_id_source = run_id
    huey.storage.record_outcomes = True
    # The failed set redacts its reasons as the store redacts errors, and
    # so fingerprints them alike.
    huey.storage.redaction = recorder.redact
    huey.after_recovery = lambda: reconcile(huey, recorder)


def recorder_for(huey):
    """The recorder attached to ``huey``, or None."""
    return _recorders.get(huey)


class _Marker:
    """Placed in the buffer by flush(); set once everything before it is written."""

    __slots__ = ("done",)

    def __init__(self):
        self.done = threading.Event()


class Recorder:
    """Buffers huey signals and writes them to the event store from a thread."""

    def __init__(self, huey, events, capture_args=True, max_arg_chars=2000,
                 redact=(), flush_interval=0.2, max_buffer=200_000,
                 give_up_after=60.0, batch_size=5000, writer_process=True):
        self.huey = huey
        self.path = os.fspath(events)
        self.capture_args = capture_args
        self.max_arg_chars = max_arg_chars
        self.redact = Redaction.of(redact)
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self.give_up_after = give_up_after
        self.batch_size = batch_size
        self.writer_process = writer_process
        self.queue_name = huey.name
        self.host = socket.gethostname()
        # Validate now, in the caller's process, so a foreign file is a clear
        # error at attach time rather than a stream of failed flushes later.
        schema.check_event_store(self.path, must_exist=False, file_only=True)
        self._reset_process_state()
        self.run_id = None
        self._run_pid = None
        self.role = None
        huey._signal.connect(self._on_signal)
        hooks.install(huey, self._on_signal)
        stock.install(huey, self)
        huey.on_startup(name="hueyscope_recorder_startup")(self._on_worker_startup)
        huey.on_shutdown(name="hueyscope_recorder_shutdown")(self._on_worker_shutdown)
        os.register_at_fork(after_in_child=self._after_fork_in_child)
        multiprocessing.util.register_after_fork(
            self, Recorder._flush_at_child_exit)
        atexit.register(self._at_exit)

    # -- per-process state -------------------------------------------------

    def _reset_process_state(self):
        self.pid = os.getpid()
        self._buffer = collections.deque()
        self._wake = threading.Event()
        self._state_lock = threading.Lock()
        self._thread = None
        self._store = None  # the writer thread's connection, opened lazily
        self._started = {}  # task id -> monotonic time it began executing
        self._dropped = 0  # dropped before reaching the store (buffer full)
        self._dropped_unrecorded = 0  # of those, not yet in the runs row
        self._next_drop_log = 0.0  # monotonic time the next drop may be logged
        self._run_row = None  # dict written to runs when it changes
        self._run_row_dirty = False
        self._samples = []
        self._writing = 0  # events of the batch the writer is writing now
        self._last_beat = time.monotonic()
        self._ended = False
        self._runs_begun = 0

    def _after_fork_in_child(self):
        # The buffer, thread and connection belong to the parent, which
        # still writes them; a forked worker starts empty, with its own
        # thread and connection, and keeps recording under the parent's run.
        if self._store is not None:
            if isinstance(self._store, writer_process.ProcessStore):
                # The pipes to the parent's writer process are the parent's.
                self._store.forget()
            # SQLite forbids using a connection across fork, and closing it
            # here could disturb the parent: keep it, untouched, for good.
            _inherited_stores.append(self._store)
        self._reset_process_state()
        # Keep the parent's run: a worker process records under it, and the
        # parent alone writes the runs row.
        self._run_pid = self.pid if self.run_id is not None else None

    def _flush_at_child_exit(self):
        # A multiprocessing child leaves through os._exit, past atexit, and
        # huey_consumer's scheduler process runs no shutdown hook: flush in a
        # finalizer, which multiprocessing runs on the way out. It calls this
        # in each child once it has cleared the finalizers of the parent.
        multiprocessing.util.Finalize(None, self._at_exit, exitpriority=10)

    # -- the signal handler (hot path) -------------------------------------

    def _on_signal(self, signal, task, *args, **kwargs):
        try:
            # A reconciled outcome carries when it happened (see reconcile).
            now = getattr(task, "hueyscope_ts", None) or time.time()
            duration = None
            if signal == "executing":
                self._started[task.id] = time.monotonic()
            elif signal in schema.TERMINAL_SIGNALS or signal == "retrying":
                # A task that raised RetryTask ends its attempt with
                # 'retrying' alone: no error signal took its run time.
                start = self._started.pop(task.id, None)
                if start is not None:
                    duration = time.monotonic() - start
            exc = args[0] if args else kwargs.get("exc")
            if exc is None and signal in EXC_INFO_SIGNALS:
                exc = sys.exc_info()[1]
            # Recovery records a dead run's task under that run's id. A
            # plain tuple, in CAPTURED's order: the cheapest thing to build.
            item = (now, signal, task, task.retries, task.priority, task.eta,
                    duration, exc, threading.current_thread().name,
                    getattr(task, "hueyscope_run_id", None))
            if len(self._buffer) >= self.max_buffer:
                self._count_dropped(1, "buffer full")
                return
            self._buffer.append(item)
            self._ensure_writer()
        except Exception:  # never raise into huey
            self._count_dropped(1, "handler error")
            logger.exception("hueyscope recorder: could not buffer %s", signal)

    def _count_dropped(self, n, why, pending=True):
        # A full buffer drops every event until the store takes writes again;
        # a line per event would bury the log it means to alert. The runs
        # row counts every one; the log says so at most every few seconds.
        # ``pending``: the count goes into the runs row with the next write
        # (else the caller's write takes it).
        with self._state_lock:
            self._dropped += n
            if pending:
                self._dropped_unrecorded += n
            now = time.monotonic()
            if now < self._next_drop_log:
                return
            self._next_drop_log = now + DROP_LOG_INTERVAL
            dropped = self._dropped
        logger.error("hueyscope recorder: event(s) not recorded (%s); %d "
                     "dropped in this process so far (logged at most every "
                     "%d s)", why, dropped, DROP_LOG_INTERVAL)

    # -- run lifecycle -------------------------------------------------------

    def begin_run(self, role="consumer", workers=None, worker_type=None,
                  app=None, periodic=True):
        """Start (or restate) the ``runs`` row of this process; returns its id.

        After end_run, this starts a new run: a consumer stopped and started
        again in one process (a notebook) gets one row per run. A consumer
        run records the tasks huey's registry declares periodic (none when
        ``periodic`` is False: this consumer does not schedule them).
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
                    "backend": run_facts.backend(self.huey), "versions": run_facts.versions(),
                    "app": app, "heartbeat": started,
                    "stopped": None, "stop_reason": None,
                    "periodic": run_facts.declared_periodic(self.huey, role, periodic),
                }
            elif self._run_row is not None:
                self._run_row.update(
                    {k: v for k, v in dict(role=role, workers=workers,
                                           worker_type=worker_type,
                                           app=app).items() if v is not None})
                self._run_row["periodic"] = run_facts.declared_periodic(
                    self.huey, role, periodic)
            self.role = role
            self._run_row_dirty = True
        self._ensure_writer()
        return self.run_id

    def _ensure_run(self):
        # A process that records without begin_run (a producer, or a worker
        # of the stock huey_consumer) gets a run row on its first event.
        if self.run_id is None or self._run_pid != self.pid:
            self.begin_run(role=self.role or run_facts.default_role())

    def _beat_if_silent(self):
        # A consumer run that nobody heartbeats -- huey's own huey_consumer
        # and its worker processes -- is still alive while this thread runs:
        # without a beat a healthy long task would be reported lost.
        if self.role != "consumer" or self._ended or self._run_pid != self.pid:
            return
        if time.monotonic() - self._last_beat >= AUTO_HEARTBEAT:
            self.heartbeat()

    def heartbeat(self, pending=None, scheduled=None, in_flight=None):
        """Note that this run is alive, with an optional queue sample."""
        now = time.time()
        self._last_beat = time.monotonic()
        with self._state_lock:
            if self._run_row is not None:
                self._run_row["heartbeat"] = now
                self._run_row_dirty = True
            if pending is not None or scheduled is not None:
                self._samples.append((now, self.queue_name, pending, scheduled,
                                      in_flight, self.run_id))
        self._ensure_writer()
        self._wake.set()

    def progress(self, task, ts, fraction, message):
        """Record ``task``'s progress (see :func:`hueyscope.progress`)."""
        self._note(task_notes.progress_note(ts, task.id, task.name, fraction,
                                            message, self.run_id))

    def task_log(self, task, ts, level, levelno, logger_name, message, worker):
        """Record a log line of ``task`` (see :mod:`hueyscope.events.task_logs`)."""
        self._note(task_notes.log_note(ts, task.id, task.name, level, levelno,
                                       logger_name, message, self.run_id,
                                       self.pid, worker))

    def _note(self, note):
        # In the buffer, in order with the task's signals: a log line never
        # reaches the store before the 'executing' event of its attempt. The
        # writer takes it out of the batch and writes it with the samples.
        if len(self._buffer) >= self.max_buffer:
            self._count_dropped(0, "buffer full: a progress or log note")
            return
        self._buffer.append(note)
        self._ensure_writer()

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
        """Events written and dropped by this process (as of the last flush)."""
        store = self._store
        return {"written": store.written if store else 0,
                "dropped": self._dropped + (store.dropped if store else 0),
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
        # A producer that enqueues and exits within a flush interval has no
        # run yet: end_run begins it, so it too is marked stopped.
        if self._buffer or (self.run_id is not None and not self._ended):
            if not self.end_run(reason="exit", timeout=15.0):
                # The store did not take them in time: they go with this
                # process, and the log says how many.
                lost = self.stats()["pending"] + self._writing
                logger.error("hueyscope recorder: %d event(s) not recorded at "
                             "exit (the event store took none of them within "
                             "15 s)", lost)

    # -- the writer thread ---------------------------------------------------

    def _ensure_writer(self):
        if self._thread is not None:  # the common case, without the lock
            return
        with self._state_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._writer_loop, name="hueyscope-writer",
                    daemon=True)
                self._thread.start()

    def _open_store(self):
        # In a child process by default: a fault of SQLite's memory map of
        # the store (SIGBUS) then kills the child, never this process, and
        # a consumer's drain pays less for the SQL (see writer_process).
        names = schema.migration_names()
        if self.writer_process is False:
            return writer.Store(self.path, self.give_up_after, names)
        store = writer_process.ProcessStore(self.path, self.give_up_after,
                                            names)
        # Started now, so its imports overlap the first flush interval
        # instead of delaying the first write (a producer's only one).
        store.start()
        return store

    def query_store(self, sql, params=(), timeout=10.0):
        """Rows of a read-only ``sql`` on the event store, or None.

        Read by the writer process, so that this process never maps the
        store either; None when no answer came within ``timeout`` (the
        writer busy with a long batch, dead, or the query failed).
        """
        self._ensure_writer()
        store = self._store
        if store is None:  # the writer thread is opening it right now
            return None
        if isinstance(store, writer_process.ProcessStore):
            return store.query(sql, params, timeout)
        # Writing from this process anyway (writer_process=False): a
        # connection of its own, as the writer thread's is busy.
        try:
            conn = sqlite3.connect(sqlite_uri(self.path, "mode=ro"),
                                   uri=True, timeout=timeout)
            try:
                return conn.execute(sql, params).fetchall()
            finally:
                conn.close()
        except sqlite3.Error:
            return None

    def _writer_loop(self):
        try:
            if self._store is None:
                self._store = self._open_store()
        except Exception:  # _drain tries again
            logger.exception("hueyscope recorder: cannot open the event store")
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self._beat_if_silent()
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
            if batch:
                self._ensure_run()
            with self._state_lock:
                run_row = dict(self._run_row) if self._run_row_dirty \
                    and self._run_row else None
                self._run_row_dirty = False
                samples, self._samples = self._samples, []
                dropped, self._dropped_unrecorded = self._dropped_unrecorded, 0
            # Drops the store counted but could not write yet go with the
            # next batch; a process with nothing more to write (a worker
            # process at its stop) sends them on a flush.
            owed = bool(markers) and self._store is not None \
                and self._store.unrecorded > 0
            if batch or run_row or samples or dropped or owed:
                try:
                    self._write(batch, run_row, samples, dropped)
                except Exception:
                    # Whatever went wrong, these events are not in the store:
                    # counted, and those waiting on a flush are not left
                    # waiting for a batch that is gone.
                    logger.exception("hueyscope recorder: writer error")
                    self._count_dropped(len(batch), "writer error")
            for m in markers:
                m.done.set()
            if not buffer:
                return

    def _write(self, batch, run_row, samples, dropped):
        if self._store is None:
            self._store = self._open_store()
        batch, notes = task_notes.take_notes(batch)
        if notes:
            samples = samples + notes
        plains = self._plains(batch)
        if len(plains) < len(batch):
            # Counted into the runs row by this very write.
            lost = len(batch) - len(plains)
            self._count_dropped(lost, "a signal no row could be made of",
                                pending=False)
            dropped += lost
        self._writing = len(plains)
        try:
            self._store.write(plains, run_row, samples, dropped, self.run_id,
                              self.host, self.pid, self.queue_name)
        finally:
            self._writing = 0

    def _plains(self, batch):
        """The batch's signals as plain tuples; one that fails costs only itself."""
        capture, redaction, limit, utc = (self.capture_args, self.redact,
                                     self.max_arg_chars, self.huey.utc)
        try:
            return [plain(item, capture, redaction, limit, utc) for item in batch]
        except Exception:
            pass  # a task attribute no plain tuple can be made from: one by one
        plains, failed = [], 0
        for item in batch:
            try:
                plains.append(plain(item, capture, redaction, limit, utc))
            except Exception:
                failed += 1
                if failed == 1:  # the others are counted (_count_dropped)
                    logger.exception("hueyscope recorder: cannot record a "
                                     "%r signal", item[CAPTURED.signal])
        return plains
