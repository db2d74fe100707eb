"""The writer: turns plain signals into event-store rows, one transaction a batch.

The recorder (hueyscope/events/recorder.py) buffers huey's signals; its
writer thread hands them to a :class:`Store` in batches of plain tuples (see
``recorder.plain``): ``(ts, signal, task_id, task, retries_left, priority,
eta, duration, error_type, error, traceback, fingerprint, args, kwargs,
worker, chain, run_id)``, where args and kwargs are JSON text (or None),
chain lists the later steps of a pipeline as ``(task_id, task, priority,
parent_id)``, and run_id (normally None: the batch's run) names another
run: the dead one whose task recovery put back (``recovered``) or parked
(``lost``), or the one a reconciled ``complete`` belongs to.
"""
import itertools
import logging
import os
import sqlite3
import time

from hueyscope import storable
from hueyscope.events import sqlite_file

logger = logging.getLogger("hueyscope.recorder")

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
    "lost": "lost",  # parked by recovery after too many deaths
    "dropped": "dropped",  # the consumer does not have the task
    "not-queued": "not-queued",  # the enqueue raised: never in the queue
}
# Signals that make a task ready to run (again).
READY_SIGNALS = ("enqueued", "scheduled", "recovered", "requeued")
# Signals that say something of a task and leave its status as it is.
NOTE_SIGNALS = ("revoke", "restore")
STATUS = dict(FINAL_STATUS, enqueued="enqueued", scheduled="scheduled",
              executing="executing", retrying="retrying", recovered="enqueued",
              requeued="enqueued", **{s: "waiting" for s in NOTE_SIGNALS})


class Store:
    """One connection to the event store, and the batch writes through it.

    A batch that fails (database locked, disk full, read-only file) is
    retried with backoff for ``give_up_after`` seconds; then its events are
    counted as dropped, logged, and the count goes into the runs row as soon
    as a later write succeeds.

    Before each batch the store checks that its path still names the file
    it has open. A store deleted (or replaced) under it would otherwise take
    every later event into a file nobody can read, without a word: it is
    opened again (created, if need be) and the runs row restated, with when
    that happened and how many events this writer had put in the lost file
    (``runs.store_recreated``, ``runs.events_lost``).

    A write that fails because the disk is full checkpoints the WAL into
    the database, which frees the WAL's space for the retries; the WAL is
    kept small on small filesystems in the first place (:func:`wal_pages`).
    If events still do not fit, the store's reserve file is deleted to make
    room for the runs row, and events are counted as dropped, unwritten,
    until the reserve can be made again (:meth:`_short_of_space`): the
    counts and the stop of every run reach the store even then.
    """

    def __init__(self, path, give_up_after=60.0, migrations=None):
        self.path = path
        self.give_up_after = give_up_after
        # Names of the schema's migrations: a store that has them all is
        # opened without sqlite-utils (see sqlite_file.open_current).
        self.migrations = migrations
        self.conn = None
        self.written = 0
        self.dropped = 0  # events this store gave up writing
        self._unrecorded = 0  # dropped here or by the caller, not yet in runs
        self._run_row = None  # a runs row that still has to be written
        self._last_run_row = None  # the latest written, restated in a new file
        self._run_id = None
        self._file = None  # (st_dev, st_ino) of the file the connection has open
        self._in_file = 0  # events this store wrote into that file
        self._lost = None  # (when, events) of a file deleted under us, unrecorded
        self._full = False  # the disk was full: events wait for room
        self._reserve_checked = float("-inf")  # monotonic time of the last look
        self._next_drop_log = 0.0
        self._reserve_size = None

    @property
    def unrecorded(self):
        """Events dropped that the runs row does not count yet."""
        return self._unrecorded

    def write(self, plains, run_row, samples, dropped, run_id, host, pid, queue):
        """Write one batch; never raises.

        ``dropped`` counts events the caller lost before they reached the
        store; they go into the runs row, not into this store's own count.
        """
        self._unrecorded += dropped
        if run_row is not None:
            self._run_row = run_row
        if run_id is not None:
            self._run_id = run_id
        if self._short_of_space() and plains:
            # The disk is full: the room left is kept for the runs row, so
            # that the counts and the run's stop reach the store.
            self._give_up(plains, "the disk is full", quiet=True)
            plains, samples = [], []
        self._write_retried(plains, samples, (run_id, host, pid, queue),
                            time.monotonic() + self.give_up_after)

    def _write_retried(self, plains, samples, ident, deadline, safe=False):
        """Write ``plains`` and ``samples``, retrying until ``deadline``.

        ``ident`` is the batch's (run id, host, pid, queue). A value the
        store refuses is no reason to wait: the same rows would be refused
        again. The batch is made storable (:func:`storable_batch`) and
        written again at once; if a row is still refused, the batch is
        halved until only the rows the store refuses are left out, each
        counted as dropped and logged. The parts are written in order, so
        they apply as the whole batch would have. ``safe``: the values were
        made storable already.
        """
        delay = 0.05
        while True:
            opened = False
            try:
                self._check_file()
                self.connection()
                opened = True
                # Built afresh for every try: _write completes the rows in
                # place from what the store holds at that moment.
                self._write(batch_rows(plains, *ident), samples)
                return
            except Exception as exc:
                if opened and isinstance(exc, VALUE_ERRORS):
                    if not safe:
                        plains, samples, ident = self._storable(
                            plains, samples, ident)
                        safe = True
                        continue
                    if len(plains) > 1:
                        half = len(plains) // 2
                        self._write_retried(plains[:half], samples, ident,
                                            deadline, safe=True)
                        self._write_retried(plains[half:], [], ident,
                                            deadline, safe=True)
                        return
                    if plains:
                        self._give_up(plains, exc, refused=True)
                        plains = []
                        continue  # the runs row, the samples, the counts
                    self._refused_run_row(samples, exc)
                    return
                if _disk_full(exc):
                    self._free_wal()
                    if plains and self._release_reserve():
                        self._give_up(plains, exc)
                        plains, samples = [], []
                        self.close()
                        continue  # the runs row, at once, in the room made
                self.close()
                if time.monotonic() >= deadline:
                    self._give_up(plains, exc)
                    return
                logger.warning("hueyscope recorder: flush failed (%s), "
                               "retrying in %.2fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    # -- values the store refuses ----------------------------------------------

    def _storable(self, plains, samples, ident):
        """The batch, and what this store holds for the run, made storable."""
        self._run_row = storable.mapping(self._run_row)
        self._run_id = storable.scalar(self._run_id)
        return (storable_batch(plains), [storable.row(s) for s in samples],
                storable.row(ident))

    def _refused_run_row(self, samples, exc):
        # Not an event is left: what the store refuses, even made storable,
        # is the runs row or a queue sample. Both are restated later (each
        # heartbeat states the row again); keeping them would fail every
        # write to come.
        logger.error("hueyscope recorder: the event store refuses this "
                     "run's row or its %d queue sample(s) (%s: %s); left "
                     "out", len(samples), type(exc).__name__, exc)
        self._run_row = None

    # -- a full disk -----------------------------------------------------------

    def _reserve_path(self):
        return self.path + "-reserve"

    def _release_reserve(self):
        """Delete the reserve file, if any; True if this made room.

        From then on every writer of the store writes only its runs row
        (counts, heartbeat, stop) until the filesystem has room for the
        reserve and as much again (:meth:`_short_of_space`).
        """
        self._full = True
        self._reserve_checked = time.monotonic()
        try:
            os.unlink(self._reserve_path())
        except OSError:
            return False
        logger.error("hueyscope recorder: the disk of the event store %s is "
                     "full; released the %d kB kept for this, events are "
                     "counted as dropped until there is room again",
                     self.path, self._reserve_bytes() // 1024)
        return True

    def _short_of_space(self):
        """Whether events must wait for room; makes the reserve when there is.

        The reserve (``<store>-reserve``, :func:`reserve_bytes`) is room set
        aside while there is plenty, for runs rows once the disk is full. It
        is shared by every process that writes the store: while it is gone
        and cannot be made again, none writes events, so what room is left
        goes to their counts and stops.
        """
        now = time.monotonic()
        if not self._full and now - self._reserve_checked < RESERVE_CHECK:
            return False
        self._reserve_checked = now
        full = not (os.path.exists(self._reserve_path())
                    or self._make_reserve())
        if self._full and not full:
            logger.warning("hueyscope recorder: the disk of the event store "
                           "%s has room again; recording events", self.path)
        self._full = full
        return full

    def _make_reserve(self):
        size = self._reserve_bytes()
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            fs = os.statvfs(directory)
        except OSError:
            return False
        if fs.f_bavail * fs.f_frsize < 2 * size:
            return False
        reserve = self._reserve_path()
        try:
            with open(reserve + ".new", "wb") as f:
                f.write(bytes(size))
            os.replace(reserve + ".new", reserve)
        except OSError:
            try:
                os.unlink(reserve + ".new")
            except OSError:
                pass
            return False
        return True

    def _reserve_bytes(self):
        if self._reserve_size is None:
            self._reserve_size = reserve_bytes(self.path)
        return self._reserve_size

    def _give_up(self, plains, exc, quiet=False, refused=False):
        """Count ``plains`` as dropped and log it (at most every few seconds
        if ``quiet`` or ``refused``: a row the store refuses)."""
        if not plains:
            # A heartbeat or a sample: the runs row waits for the next write.
            logger.error("hueyscope recorder: event store unwritable (%s); "
                         "the run's row is written with the next batch", exc)
            return
        self.dropped += len(plains)
        self._unrecorded += len(plains)
        now = time.monotonic()
        if (quiet or refused) and now < self._next_drop_log:
            return  # a batch every flush interval: a line every few seconds
        self._next_drop_log = now + DROP_LOG_INTERVAL
        if refused:
            # Which event: its signal and task id, escaped (ascii) so that
            # the line itself is always writable.
            logger.error(
                "hueyscope recorder: %d event(s) not recorded (the event "
                "store refuses a value of the %s event of task %s: %s: %s); "
                "%d dropped in this process so far (logged at most every "
                "%d s)", len(plains), ascii(plains[0][1]),
                ascii(plains[0][2]), type(exc).__name__, exc, self.dropped,
                DROP_LOG_INTERVAL)
            return
        logger.error(
            "hueyscope recorder: %d event(s) not recorded (event store "
            "unwritable: %s); %d dropped in this process so far",
            len(plains), exc, self.dropped)

    def query(self, sql, params=()):
        """Rows of a read-only ``sql``, or the text of the error; never raises."""
        try:
            self._check_file()
            return self.connection().execute(sql, params).fetchall()
        except Exception as exc:
            self.close()
            return "%s: %s" % (type(exc).__name__, exc)

    def connection(self):
        if self.conn is None:
            conn = sqlite_file.open_current(self.path, self.migrations)
            if conn is None:  # to create, to upgrade, or not a store at all
                from hueyscope.events import schema

                conn = schema.open_event_store(self.path).conn
            conn.isolation_level = None  # we BEGIN ourselves
            if self._file is None:
                self._file, self._in_file = _identity(self.path), 0
            # Index pages of random task ids are rewritten batch after batch:
            # checkpointing every 40 MB of WAL instead of 4 MB, with the
            # pages cached, writes each of them back once, not ten times --
            # where the filesystem has room for it (see wal_pages).
            pages = wal_pages(self.path)
            conn.execute("pragma wal_autocheckpoint=%d" % pages)
            conn.execute("pragma journal_size_limit=%d" % (pages * PAGE_SIZE))
            conn.execute("pragma cache_size=-32000")
            self.conn = conn
        return self.conn

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None

    def _check_file(self):
        """Notice a store deleted or replaced since it was opened; reopen it.

        SQLite keeps writing a deleted file through the open descriptor, so
        the path is compared with the file opened, by device and inode.
        """
        if self._file is None or _identity(self.path) == self._file:
            return
        lost = self._in_file
        logger.error(
            "hueyscope recorder: the event store %s was deleted or replaced "
            "while open; creating it again (the %d event(s) this process had "
            "written to it are gone with it)", self.path, lost)
        self.close()
        self._file, self._in_file = None, 0
        before = self._lost[1] if self._lost else 0
        self._lost = (time.time(), before + lost)
        # The new file has no runs row for this run: restate it.
        if self._run_row is None:
            self._run_row = self._last_run_row

    def _free_wal(self):
        # On a full disk the WAL holds space the database may need: move
        # its pages into the database and truncate it. If the database
        # cannot grow either, this fails too, and the retries try again.
        try:
            self.conn.execute("pragma wal_checkpoint(TRUNCATE)")
        except Exception:
            pass

    def _write(self, rows, samples):
        events, tasks, rollup, late = rows
        conn = self.connection()
        run_row, dropped = self._run_row, self._unrecorded
        try:
            conn.execute("begin immediate")
            if run_row is not None:
                conn.execute(UPSERT_RUN, dict(RUN_DEFAULTS, **run_row))
            if events:
                # New task rows take the next sequence numbers; a row that
                # already exists keeps its own (the upsert leaves seq alone).
                # The write lock is held, so no other process takes them.
                seq = conn.execute(
                    "select coalesce(max(seq), 0) from tasks").fetchone()[0]
                for row in tasks:
                    seq += 1
                    row[19] = seq
                current = _upsert_tasks(conn, tasks)
                updates, recount = finish_events(events, current, rollup, late)
                for event in recount:
                    event[6] = 1 + conn.execute(
                        EXECUTIONS_BEFORE, (event[21], event[0])).fetchone()[0]
                _insert_many(conn, INSERT_EVENTS, events)
                _insert_many(conn, UPSERT_ROLLUP, [
                    (h, t, s, a[0], a[1], a[2], a[3])
                    for (h, t, s), a in rollup.items()])
                if updates:
                    conn.executemany(FILL_LATE_WAIT, updates)
            if samples:
                conn.executemany(INSERT_SAMPLE, samples)
            if self._run_id is not None and (events or dropped):
                conn.execute(COUNT_RUN_EVENTS, (
                    self._run_id, *_run_identity(self._run_id),
                    len(events), dropped))
            lost = self._lost
            if lost is not None and self._run_id is not None:
                conn.execute(
                    "update runs set store_recreated = ?, "
                    "events_lost = events_lost + ? where id = ?",
                    (lost[0], lost[1], self._run_id))
            conn.execute("commit")
        except BaseException:
            try:
                conn.execute("rollback")
            except Exception:
                pass
            raise
        if run_row is not None:
            self._last_run_row = run_row
        if self._run_row is run_row:
            self._run_row = None
        if lost is not None and self._run_id is not None:
            self._lost = None
        self._unrecorded -= dropped
        self.written += len(events)
        self._in_file += len(events)


PAGE_SIZE = 4096  # SQLite's default, which the event store keeps
RESERVE_BYTES = 256 * 1024  # room kept for runs rows on a full disk
RESERVE_CHECK = 10  # seconds between looks for the reserve while there is room
DROP_LOG_INTERVAL = 10  # seconds between lines about events dropped for room
WAL_PAGES = 10000  # the WAL checkpointed at 40 MB, where there is room


def wal_pages(path):
    """WAL pages between automatic checkpoints for a store at ``path``.

    :data:`WAL_PAGES`, or a sixteenth of the filesystem the store is on if
    that is less (at least 16 pages): a WAL allowed 40 MB takes a small
    disk whole, and then not even a checkpoint can run -- it needs room in
    the database for the pages it moves there.
    """
    try:
        fs = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return WAL_PAGES
    share = fs.f_blocks * fs.f_frsize // 16 // PAGE_SIZE
    return max(16, min(WAL_PAGES, share))


def reserve_bytes(path):
    """Size of the reserve file of a store at ``path`` (see Store).

    :data:`RESERVE_BYTES`, or a thirty-second of a smaller filesystem (at
    least 4 pages): enough for the runs rows of a few processes, not a bite
    out of a small disk.
    """
    try:
        fs = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return RESERVE_BYTES
    share = fs.f_blocks * fs.f_frsize // 32
    return max(4 * PAGE_SIZE, min(RESERVE_BYTES, share))


# What the store raises for a value it cannot take -- text with a lone
# surrogate, an integer wider than 64 bits, a type sqlite3 cannot bind, a
# signal or a field the rows cannot be made from -- as opposed to the state
# of the store (locked, full, read-only: sqlite3.OperationalError), which a
# retry can outlast.
VALUE_ERRORS = (UnicodeError, OverflowError, TypeError, KeyError, IndexError,
                sqlite3.InterfaceError, sqlite3.ProgrammingError,
                sqlite3.IntegrityError, sqlite3.DataError)


def storable_batch(plains):
    """``plains`` with every value in a form the store takes (see storable).

    Deterministic, so a value stored this way in one batch is stored the
    same way in every other: a run id or a task name with a lone surrogate
    still joins its rows.
    """
    out = []
    for p in plains:
        chain = p[15]
        if chain:
            chain = [storable.row(step) for step in chain]
        out.append(storable.row(p[:15]) + (chain,) + storable.row(p[16:]))
    return out


def _identity(path):
    """(st_dev, st_ino) of the file at ``path``, or None if there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _disk_full(exc):
    """Whether ``exc`` is SQLite's SQLITE_FULL (13)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF == 13
    return "disk is full" in str(exc)


def _run_identity(run_id):
    """(host, pid, started) as a run id spells them: ``host:pid:started[.n]``."""
    try:
        host, pid, started = run_id.rsplit(":", 2)
        return host, int(pid), float(started.split(".")[0])
    except ValueError:  # an id made elsewhere (a test, an import)
        return run_id, 0, 0.0


def batch_rows(plains, run_id, host, pid, queue):
    """(events rows, tasks rows, rollup, late task ids) for one batch.

    All of a batch's signals for one task fold into a single ``tasks`` row
    (see :func:`_fold`), so the table and its indexes are touched once per
    task per batch, not once per signal. Event rows are finished by
    :func:`finish_events` once the tasks rows are written.
    """
    events, late = [], []
    tasks = {}
    rollup = {}
    named = []  # events about every task of a name: no task row, no seq
    for (ts, signal, task_id, name, retries, priority, eta_ts, duration,
         error_type, error, tb_text, fp, args, kwargs, worker, chain,
         own_run) in plains:
        if task_id is None:
            named.append([ts, own_run or run_id, queue, None, name, signal,
                          None, retries, priority, eta_ts, duration, None,
                          error_type, error, tb_text, fp, args, kwargs, host,
                          pid, worker, None])
            continue
        executing = signal == "executing"
        ready = max(ts, eta_ts or 0) if signal in READY_SIGNALS else None
        finished = ts if signal in FINAL_STATUS else None
        event_run = own_run or run_id
        row = [task_id, name, queue, STATUS[signal],
               ts if signal == "enqueued" else None, ready,
               ts if executing else None, finished, 1 if executing else 0,
               duration, error_type, error, fp, priority, eta_ts, None,
               event_run if (executing or finished) else None, ts, None, None]
        current = tasks.get(task_id)
        if current is None:
            tasks[task_id] = row
        else:
            _fold(current, row)
            row = current
        wait = row[18] if executing else None
        # Executions of this task so far in this batch (plus one for the
        # execution an enqueue or schedule leads to); made absolute by
        # finish_events once the batch's total is known.
        executions = row[8] + (signal in READY_SIGNALS)
        events.append([ts, event_run, queue, task_id, name, signal, executions,
                       retries, priority, eta_ts, duration, wait, error_type,
                       error, tb_text, fp, args, kwargs, host, pid, worker,
                       None])
        if signal == "enqueued":
            late.append(task_id)
        if chain:
            # A pipeline: its later steps exist now, waiting on this one --
            # or, when the enqueue raised, will never run.
            status = "waiting" if signal == "enqueued" else "not-queued"
            for child_id, child_name, child_priority, parent_id in chain:
                waiting = [child_id, child_name, queue, status, None, None,
                           None, None, 0, None, None, None, None,
                           child_priority, None, parent_id, None, ts, None,
                           None]
                if child_id in tasks:
                    _fold(tasks[child_id], waiting)
                else:
                    tasks[child_id] = waiting
        key = (_hour(ts), name, signal)
        agg = rollup.get(key)
        if agg is None:
            agg = rollup[key] = [0, 0.0, 0.0, 0.0]
        agg[0] += 1
        if duration is not None:
            agg[1] += duration
            if duration > agg[2]:
                agg[2] = duration
    for event in events:
        event[6] -= tasks[event[3]][8]
    return events + named, list(tasks.values()), rollup, late


def _hour(ts):
    """The start of the roll-up hour ``ts`` falls in (rollup_hourly.hour)."""
    return (ts // 3600) * 3600


def finish_events(events, current, rollup, late):
    """Complete a batch's event rows from the tasks rows as now stored.

    ``current`` maps task id to ``(seq, attempts, wait, started)`` after the
    batch's upsert. Each event gets its task's sequence number, its attempt
    made absolute (executions before this batch, from any process, plus its
    own), and each execution whose wait this batch could not compute gets
    the task's. Waits go into the hourly roll-up. Returns the
    ``(wait, task_seq)`` updates for executions recorded earlier than their
    task's enqueue (a producer that flushed late), and the enqueue events
    whose attempt :data:`EXECUTIONS_BEFORE` must count.
    """
    executed = {event[3] for event in events if event[5] == "executing"}
    recount = []
    for event in events:
        if event[3] is None:
            continue  # about a task name, not a task
        seq, attempts, wait, started = current[event[3]]
        event[21] = seq
        event[6] += attempts
        if event[5] == "executing":
            if event[11] is None:
                event[11] = wait
            if event[11] is not None:
                rollup[(_hour(event[0]), event[4], "executing")][3] += event[11]
        elif (event[5] in ("enqueued", "scheduled") and started is not None
              and started > event[0] and event[3] not in executed):
            # Executions recorded before this enqueue happened after it: the
            # attempt it leads to counts only the executions that preceded it.
            recount.append(event)
    updates = []
    for task_id in late:
        seq, _, wait, started = current[task_id]
        if started is not None and wait is not None and task_id not in executed:
            updates.append((wait, seq))
    return updates, recount


def _upsert_tasks(conn, rows):
    """Apply UPSERT_TASK to ``rows``; returns task id -> (seq, attempts, wait, started)."""
    prefix, values, suffix = UPSERT_TASK
    current = {}
    for i in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[i:i + ROWS_PER_STATEMENT]
        sql = _multi_row_sql(prefix, values, suffix, len(chunk))
        for task_id, *stored in conn.execute(sql, _flat(chunk)):
            current[task_id] = stored
    return current


ROWS_PER_STATEMENT = 64


def _insert_many(conn, statement, rows):
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
        sql = _multi_row_sql(prefix, values, suffix, ROWS_PER_STATEMENT)
        conn.executemany(sql, (
            _flat(rows[i:i + ROWS_PER_STATEMENT])
            for i in range(0, full, ROWS_PER_STATEMENT)))
    rest = rows[full:]
    if rest:
        conn.execute(_multi_row_sql(prefix, values, suffix, len(rest)),
                     _flat(rest))


_SQL_CACHE = {}


def _flat(rows):
    """One statement's parameters: the rows' values, one after the other."""
    return list(itertools.chain.from_iterable(rows))


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
    for i in (1, 2):
        if row[i] is None:
            row[i] = new[i]
    if new[15] is not None:
        row[15] = new[15]  # a rescheduled step is its next step's parent
    if new[3] != "waiting":
        row[3] = new[3]
    if new[4] is not None and (row[4] is None or new[4] < row[4]):
        row[4] = new[4]
    if new[6] is not None:
        row[18] = max(new[6] - row[5], 0.0) if row[5] is not None else None
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


INSERT_EVENTS = ("""insert into events (ts, run_id, queue, task_id, task, signal,
  attempt, retries_left, priority, eta, duration, wait, error_type, error,
  traceback, fingerprint, args, kwargs, host, pid, worker, task_seq)""",
                 "(" + ", ".join(["?"] * 22) + ")", "")

# One statement for every signal, applied in order. Signals from different
# processes can arrive out of order (a producer flushes its 'enqueued' after
# the consumer already finished the task), so status only moves forward in
# time, and a late 'ready' still yields the wait of an execution already seen.
UPSERT_TASK = ("""insert into tasks (task_id, task, queue, status, enqueued, ready,
  started, finished, attempts, duration, error_type, error, fingerprint,
  priority, eta, parent_id, run_id, updated, wait, seq)""",
               "(" + ", ".join(["?"] * 20) + ")", """
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

