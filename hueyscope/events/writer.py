"""The writer: turns plain signals into event-store rows, one transaction a batch.

The recorder (hueyscope/events/recorder.py) buffers huey's signals; its
writer thread hands them to a :class:`Store` in batches of plain tuples
(:data:`hueyscope.events.columns.SIGNAL`, made by
:func:`hueyscope.events.capture.plain`). The store builds their rows
(:mod:`hueyscope.events.rows`) and runs the SQL
(:mod:`hueyscope.events.statements`) in one transaction a batch, and keeps
writing through what befalls a store: a lock, a full disk, a file deleted.
"""
import logging
import os
import sqlite3
import time

from hueyscope import filemodes, storable
from hueyscope.events import sqlite_file, task_notes
from hueyscope.events.columns import EVENT, SIGNAL, TASK
from hueyscope.events.rows import batch_rows, finish_events, storable_batch
from hueyscope.events.statements import (
    COUNT_RUN_EVENTS, EXECUTIONS_BEFORE, FILL_LATE_WAIT, INSERT_EVENTS,
    INSERT_SAMPLE, RUN_DEFAULTS, UPSERT_ROLLUP, UPSERT_RUN, insert_many,
    upsert_tasks)

logger = logging.getLogger("hueyscope.recorder")

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
            with filemodes.open_private(reserve + ".new") as f:
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
                "%d s)", len(plains), ascii(plains[0][SIGNAL.signal]),
                ascii(plains[0][SIGNAL.task_id]), type(exc).__name__, exc,
                self.dropped, DROP_LOG_INTERVAL)
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
                    row[TASK.seq] = seq
                current = upsert_tasks(conn, tasks)
                updates, recount = finish_events(events, current, rollup, late)
                for event in recount:
                    event[EVENT.attempt] = 1 + conn.execute(
                        EXECUTIONS_BEFORE,
                        (event[EVENT.task_seq], event[EVENT.ts])).fetchone()[0]
                insert_many(conn, INSERT_EVENTS, events)
                insert_many(conn, UPSERT_ROLLUP, [
                    (h, t, s, *sums)
                    for (h, t, s), sums in rollup.items()])
                if updates:
                    conn.executemany(FILL_LATE_WAIT, updates)
            samples, progress, logs = task_notes.split(samples)
            if samples:
                conn.executemany(INSERT_SAMPLE, samples)
            task_notes.write(conn, progress, logs)
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
