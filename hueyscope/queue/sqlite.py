"""The SQLite queue: huey's storage with a chosen durability, leased or not.

:class:`DurableSqliteStorage` is huey's SqliteStorage with an explicit
synchronous mode (see :mod:`hueyscope.queue.factory`) and the periodic tick
claims; :class:`LeasedSqliteStorage` adds the leased dequeue (see
:mod:`hueyscope.queue.leases`), with group commit: workers that wait for a
task at the same moment are served by one transaction, and results of
workers that finish while another commits are written together. With FULL
durability each commit is a sync, so fewer transactions is what makes the
leased queue faster than stock huey's, not slower.

:class:`SqliteHuey` is huey's SqliteHuey on the leased storage. Any app can
use it in place of huey's: ``from hueyscope import SqliteHuey``.
"""
import collections
import contextlib
import os
import threading
import time
import weakref

from huey.api import SqliteHuey as _HueySqliteHuey
from huey.storage import SqliteStorage

from hueyscope.filemodes import create_private
from hueyscope.queue.contract import LeasedStorage
from hueyscope.queue.files import check_queue_file
from hueyscope.queue.leased_huey import LeasedHuey
from hueyscope.queue.leases import LeaseKeeping, _Held
from hueyscope.queue.periodic import TICK_DDL, OncePerTick, enqueue_unclaimed
from hueyscope.queue.control import NOT_PAUSED, RUNNING, SLOT_FREE
from hueyscope.queue.tables import (DDL, DEAD_LETTER_COLUMNS, LEASE_SCHEMA,
                                    NAME_COLUMNS, QueueCursor)


# The dequeue: the next messages neither paused nor of a full concurrency
# slot (see queue.control), with their slot's leases.
TAKE = (
    "select id, data, priority, hueyscope_name, hueyscope_unique, "
    "hueyscope_slot, hueyscope_limit, case when hueyscope_limit is null "
    "then 0 else " + RUNNING + " end from task t where queue = ? and " +
    NOT_PAUSED + " and " + SLOT_FREE + " order by priority desc, id limit ?")


class DurableSqliteStorage(SqliteStorage):
    """SqliteStorage with an explicit synchronous mode (FULL or NORMAL).

    Refuses a file that is not a queue before huey creates its tables in it
    (see :func:`check_queue_file`), and creates a new one owner-only (see
    :mod:`hueyscope.filemodes`). Holds the claims that run each periodic
    task once per tick (see :mod:`hueyscope.queue.periodic`).
    """

    ddl = SqliteStorage.ddl + [TICK_DDL]
    enqueue_unclaimed = enqueue_unclaimed
    # For queue SQL written once (tables.QueueCursor).
    queue_tables = {"kv": "kv", "task": "task", "tick": "hueyscope_periodic_tick"}
    param_style = "qmark"

    def __init__(self, *args, synchronous="FULL", **kwargs):
        self.synchronous = synchronous
        filename = kwargs.get("filename") or (args[1] if len(args) > 1
                                              else "huey.db")
        check_queue_file(filename)
        # The messages are every task's arguments, pickled as huey needs
        # them: a new queue is owner-only, and its -wal and -shm with it.
        if not kwargs.get("uri"):
            create_private(filename)
        super().__init__(*args, **kwargs)

    def _create_connection(self):
        conn = super()._create_connection()
        conn.execute("pragma synchronous=%s" % self.synchronous)
        return conn


class DurableSqliteHuey(OncePerTick, _HueySqliteHuey):
    """huey's SqliteHuey (at-most-once) on DurableSqliteStorage."""

    storage_class = DurableSqliteStorage


class LeasedSqliteStorage(LeaseKeeping, DurableSqliteStorage, LeasedStorage):
    """huey's SQLite storage with leased dequeue (see the module docstring).

    A :class:`~hueyscope.queue.contract.LeasedStorage`.

    Takes SqliteStorage's options plus ``synchronous`` (FULL or NORMAL).
    Tables of huey's stay as huey makes them; ours are named ``hueyscope_*``.
    """

    ddl = DurableSqliteStorage.ddl + DDL
    leased = True
    # Lease a worker's next message in the transaction that stores its
    # result: one transaction per task instead of two. Only for consumers
    # that put back what they leased and never started when they stop
    # (hueyscope's Consumer turns it on).
    prefetch = False

    def __init__(self, *args, **kwargs):
        self._reset_process_state()
        # Set by SqliteHuey: who this process is in the event store.
        self.run_id_source = None
        super().__init__(*args, **kwargs)
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: ref() and ref()._reset_process_state())

    def _reset_process_state(self):
        # A forked worker is a holder of its own, with its own connection
        # (huey closes the parent's before forking), buffer and heartbeat.
        self._reset_lease_state()
        self._buffer = collections.deque()  # (lease id, data, seq) for waiting workers
        self._unstarted = set()  # leases taken ahead for a worker, not handed over
        self._group = []  # results waiting to be committed together
        self._group_lock = threading.Lock()
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        self._taken = 0

    def lock_for_recovery(self, curs):
        """Nothing to do: every write transaction here is exclusive."""

    def enqueue(self, data, priority=None):
        with self.db(commit=True) as curs:
            self._insert_message(curs, data, priority)

    def flush_all(self):
        super().flush_all()
        with self.db(commit=True) as curs:  # nothing holds a key any more
            curs.execute("delete from hueyscope_unique where queue = ?",
                         (self.name,))

    def initialize_schema(self):
        super().initialize_schema()
        # A queue made by lease schema 1: the dead-letter table becomes the
        # failed set, in one transaction with the schema's new number.
        with self.db(commit=True) as curs:
            have = {row[1] for row in curs.execute(
                "pragma table_info(hueyscope_dead_letter)")}
            for column in DEAD_LETTER_COLUMNS:
                if column not in have:
                    curs.execute("alter table hueyscope_dead_letter add "
                                 "column %s text" % column)
            # Lease schema 3: messages and leases name their task.
            for table, column, kind in NAME_COLUMNS:
                table = table.format(**self.queue_tables)
                if column not in {row[1] for row in curs.execute(
                        "pragma table_info(%s)" % table)}:
                    curs.execute("alter table %s add column %s %s"
                                 % (table, column, kind))
            curs.execute("update hueyscope_meta set value = ? where key = "
                         "'lease_schema' and value < ?",
                         (LEASE_SCHEMA, LEASE_SCHEMA))

    # -- transactions that also settle leases ------------------------------

    @contextlib.contextmanager
    def db(self, commit=False, close=False):
        # huey's BaseSqlStorage.db(), with every write transaction also
        # releasing the leases whose outcome is now durable.
        with self.lock:
            try:
                if commit:
                    with self._write() as cursor:
                        yield cursor
                else:
                    cursor = self.conn.cursor()
                    try:
                        yield cursor
                    finally:
                        cursor.close()
            finally:
                if close:
                    self.conn.close()
                    self._conn = None

    @contextlib.contextmanager
    def _write(self):
        """A write transaction that releases the leases now due; the lock is held.

        Rolled back, it leaves every lease as it was before (see _unrelease).
        """
        conn = self.conn
        cursor = conn.cursor()
        cursor.execute(self.begin_sql)
        released = None
        try:
            released = self._release_in(cursor)
            yield cursor
            conn.commit()
            self._holder_new = False
        except Exception:
            conn.rollback()
            self._unrelease(released)
            raise
        finally:
            cursor.close()

    # No message is leased ahead by _release_in: its transaction may be
    # about to enqueue a retry or a continuation of higher priority than
    # what is queued now (only a result's group commit, which enqueues
    # nothing, leases the worker's next message).

    def _unrelease(self, released):
        # The transaction rolled back: a holder registered in it is not one.
        if self._holder_new:
            self._holder = None
            self._holder_new = False
        super()._unrelease(released)

    # -- results: group commit ----------------------------------------------

    def put_data(self, key, value, is_result=False):
        # A worker's own result, releasing its lease: workers that finish
        # while another one commits have their results written by the next
        # transaction together, one sync for all (group commit), each with
        # its lease released and its next task leased.
        local = self._thread()
        if not (is_result and self.prefetch and len(local.release) == 1
                and local.next is None):
            return super().put_data(key, value, is_result)
        request = _ResultWrite(key, self.to_blob(value), local.release[0])
        local.release = []
        with self._group_lock:
            self._group.append(request)
        try:
            with self.lock:
                if not request.done:
                    self._commit_group()
        except Exception:
            # Not written: the lease is still held, as after any failed write.
            self._unrelease_own([request.lease])
            raise
        if request.error is not None:  # written by another worker, and failed
            self._unrelease_own([request.lease])
            raise request.error
        if request.next is not None:
            local.next = request.next

    def _commit_group(self):
        """Write every waiting result in one transaction; the storage lock is held."""
        with self._group_lock:
            batch, self._group = self._group, []
        try:
            with self._write() as curs:
                curs.executemany(
                    "insert or replace into kv (queue, key, value) values (?, ?, ?)",
                    [(self.name, r.key, r.value) for r in batch])
                self._delete_leases(curs, [r.lease for r in batch])
                taken = self._take(curs, len(batch))
        except Exception as exc:
            for r in batch:
                r.error, r.done = exc, True
            raise
        for r, t in zip(batch, taken):
            r.next = t
            self._unstarted.add(t[0])
        for r in batch:
            r.done = True

    # -- dequeue -------------------------------------------------------------

    def dequeue(self):
        local = self._thread()
        ready = local.next
        if ready is not None:
            local.next = None
            return self._hand_over(*ready)
        with self._waiting_lock:
            self._waiting += 1
        try:
            with self.lock:
                if self._buffer:
                    lease, data, seq = self._buffer.popleft()
                else:
                    taken = self._lease_batch()
                    if not taken:
                        return None
                    (lease, data, seq), rest = taken[0], taken[1:]
                    self._buffer.extend(rest)
                    self._unstarted.update(r[0] for r in rest)
        finally:
            with self._waiting_lock:
                self._waiting -= 1
        return self._hand_over(lease, data, seq)

    def _hand_over(self, lease, data, seq):
        self._unstarted.discard(lease)
        local = self._thread()
        if local.lease is not None:
            # The message handed over before this one was never bound to a
            # task (a caller of the storage, not of the Huey): it stays held
            # until this process settles it at exit.
            with self._held_lock:
                self._held.setdefault(None, []).append(_Held(local.lease, local.seq, False))
        local.lease, local.seq = lease, seq
        self._ensure_heartbeat()
        return data

    def _lease_batch(self):
        """Lease one message for each worker now waiting; the storage lock is held."""
        conn = self.conn
        has_task = conn.execute("select 1 from task where queue = ? limit 1",
                                (self.name,)).fetchone()
        if not has_task and not self._pending:
            return []
        with self._write() as cursor:
            return self._take(cursor, max(self._waiting, 1)) if has_task else []

    def _take(self, curs, n):
        """Lease the next ``n`` messages, inside the open transaction.

        Those of a paused task stay where they are (see queue.control).
        """
        rows = curs.execute(TAKE, (self.name, n)).fetchall()
        if not rows:
            return []
        holder, now = self._holder_in(curs), time.time()
        taken, ids, more = [], [], {}
        for row_id, data, priority, name, unique, slot, limit, running in rows:
            if limit is not None:
                # Its slot's leases, and those this batch took already.
                if running + more.get(slot, 0) >= limit:
                    continue  # stays queued where it is
                more[slot] = more.get(slot, 0) + 1
            curs.execute(
                "insert into hueyscope_lease (queue, data, priority, holder, "
                "taken, task, unique_key, slot, slot_limit) "
                "values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (self.name, data, priority, holder, now, name, unique, slot, limit))
            self._took_unique(curs.lastrowid, unique)
            self._taken += 1
            taken.append((curs.lastrowid, data, self._taken))
            ids.append(row_id)
        if not ids:
            return []
        curs.execute("delete from task where id in (%s)" % ",".join("?" * len(ids)),
                     ids)
        return taken

    def put_back_unstarted(self):
        """Return the leases taken ahead for workers that never started them.

        A stopping consumer calls this once its workers are done: they go
        back on the queue as they were, with nothing to record.
        """
        if self._pid != os.getpid():
            return 0
        ids = list(self._unstarted)
        if not ids:
            return 0
        with self.db(commit=True) as curs:
            self._put_back(QueueCursor(self, curs), ids)
        self._unstarted.difference_update(ids)
        self._buffer.clear()
        return len(ids)


class _ResultWrite:
    """A result waiting for the group commit, and what the commit gave back."""

    __slots__ = ("key", "value", "lease", "done", "error", "next")

    def __init__(self, key, value, lease):
        self.key, self.value, self.lease = key, value, lease
        self.done, self.error, self.next = False, None, None


class SqliteHuey(OncePerTick, LeasedHuey, _HueySqliteHuey):
    """huey's SqliteHuey with at-least-once delivery (a leased queue).

    A drop-in replacement: ``SqliteHuey("app", filename="queue.db")``. A
    consumer killed mid-task leaves its tasks leased; the next consumer (or
    ``hueyscope recover``) puts them back on the queue and frees their locks.
    Periodic tasks run once per tick however many consumers share the queue.
    """

    storage_class = LeasedSqliteStorage
