"""At-least-once delivery on SQLite: a queue storage that leases instead of deleting.

huey's SqliteStorage dequeues by deleting the message: a consumer killed
mid-task (SIGKILL, OOM, power loss) loses it, and any lock it held stays
held. :class:`LeasedSqliteStorage` moves the message into
``hueyscope_lease`` instead, in the same transaction, naming the process that
took it (``hueyscope_holder``: host identity, pid, process start time,
heartbeat, the event store's run id). The lease is released by the write that
makes the outcome durable, in that write's own transaction:

- a stored result (``put_result`` of the task's own id);
- a retry's re-enqueue or re-schedule, or a not-yet-due task moved to the
  schedule;
- the next pipeline step's enqueue (a step's result and its continuation);
- otherwise (revoked, expired, canceled, a result of None that is not
  stored...) the process's next write, usually the next dequeue, so it
  costs no transaction of its own.

:mod:`hueyscope.recovery` puts the leases of dead holders back on the queue.
Recovery never runs again a task whose result was stored.

Workers that wait for a task at the same moment are served by one
transaction: the first to get the storage lock leases one message for each
waiting worker of its process and leaves the others in a buffer they take
from. With FULL durability each commit is a sync, so fewer transactions is
what makes the leased queue faster than stock huey's, not slower.

:class:`SqliteHuey` is huey's SqliteHuey on this storage, plus the few hooks
that tell the storage when a task's outcome is being written. Any app can use
it in place of huey's: ``from hueyscope import SqliteHuey``.
"""
import collections
import contextlib
import logging
import multiprocessing.util
import os
import socket
import sys
import threading
import time
import weakref

from huey import signals as S
from huey.api import SqliteHuey as _HueySqliteHuey
from huey.utils import Error

from hueyscope import liveness
from hueyscope.events.hooks import UnknownTask
from hueyscope.periodic import OncePerTick
from hueyscope.queue import DurableSqliteStorage

logger = logging.getLogger("hueyscope.leases")

LEASE_SCHEMA = 2  # 2: the dead-letter table is the failed set (kind, error)
HEARTBEAT_INTERVAL = 5.0  # seconds between a holder's heartbeats
# Seconds between recoveries run from the dequeue path (huey's own health
# check interval).
RECOVER_EVERY = 10.0
# Final outcomes that release a lease through the next write of the process.
NOTED_OUTCOMES = frozenset((S.SIGNAL_REVOKED, S.SIGNAL_EXPIRED, S.SIGNAL_CANCELED,
                            S.SIGNAL_LOCKED, S.SIGNAL_RATE_LIMITED))
LOCK_MARK = ".lock."  # huey's lock keys are "<queue>.lock.<name>"

DDL = [
    "create table if not exists hueyscope_meta ("
    "key text primary key, value)",
    # One row per process that took work from the queue.
    "create table if not exists hueyscope_holder ("
    "id integer primary key, host text not null, hostname text, "
    "pid integer not null, pid_start integer, run_id text, "
    "started real not null, heartbeat real not null)",
    # One row per message taken and not yet settled. Its own id, never
    # reused: huey's task ids are reused as soon as the table empties.
    "create table if not exists hueyscope_lease ("
    "id integer primary key autoincrement, queue text not null, data blob not null, "
    "priority real not null default 0, holder integer not null, "
    "taken real not null)",
    "create index if not exists hueyscope_lease_holder on hueyscope_lease (holder)",
    # Who holds each lock_task lock (the lock itself is huey's kv row).
    "create table if not exists hueyscope_lock ("
    "queue text not null, key text not null, holder integer not null, "
    "worker text, taken real not null, primary key (queue, key))",
    # How often each task was recovered, so a poison task is parked.
    "create table if not exists hueyscope_recoveries ("
    "queue text not null, task_id text not null, count integer not null, "
    "updated real not null, primary key (queue, task_id))",
    # The failed set: messages parked instead of run (kind 'lost': a poison
    # task; 'dropped': a task the consumer does not have) or failed for good
    # (kind 'failed'), each with its original message.
    "create table if not exists hueyscope_dead_letter ("
    "id integer primary key, queue text not null, task_id text, task text, "
    "data blob not null, priority real not null default 0, reason text, "
    "recoveries integer not null default 0, run_id text, parked real not null, "
    "kind text, error_type text, fingerprint text)",
    # The outbox of outcomes: a row per lease released because its task
    # reached an outcome, written in the transaction that releases it, so
    # the record can be put right after a crash (hueyscope.events.reconcile).
    "create table if not exists hueyscope_settled ("
    "id integer primary key, queue text not null, "
    "task_id text not null, task text, signal text not null, priority real, "
    "run_id text, ts real not null)",
    "insert or ignore into hueyscope_meta (key, value) "
    "values ('lease_schema', %d)" % LEASE_SCHEMA,
]


# Columns lease schema 2 added to hueyscope_dead_letter.
DEAD_LETTER_COLUMNS = ("kind", "error_type", "fingerprint")


def _is_lock(key):
    """Whether a kv key is a ``lock_task`` lock (huey's are str; any other
    key, bytes too, goes to huey's storage untouched)."""
    return isinstance(key, str) and LOCK_MARK in key


class QueueCursor:
    """A cursor that runs queue SQL on any leased storage.

    Recovery's statements are written once, in SQLite's ``?`` style with
    huey's tables as ``{kv}`` and ``{task}``; each storage names its tables
    (``queue_tables``) and its parameter style (``param_style``).
    """

    def __init__(self, storage, cursor):
        self.cursor = cursor
        self.tables = storage.queue_tables
        self.pyformat = storage.param_style == "pyformat"

    def _sql(self, sql):
        sql = sql.format(**self.tables)
        return sql.replace("?", "%s") if self.pyformat else sql

    def execute(self, sql, params=()):
        return self.cursor.execute(self._sql(sql), params)

    def executemany(self, sql, rows):
        return self.cursor.executemany(self._sql(sql), rows)


class LeaseKeeping:
    """What every leased storage does alike, through :class:`QueueCursor`.

    ``record_outcomes`` (set by ``hueyscope.attach``): each lease released
    for an outcome leaves a row in ``hueyscope_settled`` in the same
    transaction, the queue's own word for what happened, read by
    :mod:`hueyscope.events.reconcile` when the events of a crash are lost.

    The process's holder row and its heartbeat, the calling thread's lease
    (the task it runs) and what the Huey tells about it (:class:`LeasedHuey`),
    parking, and ``lock_task`` locks with their holder. A storage adds the
    leasing dequeue and ``db()`` transactions that delete the leases in
    ``_pending`` (and the thread's own, once its outcome is written).
    """

    record_outcomes = False

    def _reset_lease_state(self):
        self._pid = os.getpid()
        self._local = threading.local()
        self._holder = None
        self._holder_new = False  # registered in a transaction not yet committed
        self._pending = collections.deque()  # lease ids to release at the next write
        # Task id -> [_Held] of the messages this process took and has not
        # settled, whichever thread dequeued or runs them (huey lets a task
        # be dequeued on one thread and executed on another, or several be
        # dequeued before any runs).
        self._held = {}
        self._held_lock = threading.Lock()
        # Lease id -> (task id, name, signal, priority) of a lease released
        # for an outcome: its outbox row goes into the releasing transaction.
        self._settling = {}
        self._heartbeat_thread = None
        self._stop_heartbeat = threading.Event()
        self._exit_hook = None
        self._recover_lock = threading.Lock()
        self._next_recovery = 0.0

    # -- the holder: this process, as recovery sees it ---------------------

    def _holder_in(self, curs):
        """This process's holder id, registering it inside the caller's transaction."""
        if self._holder is None:
            now = time.time()
            rows = QueueCursor(self, curs).execute(
                "insert into hueyscope_holder (host, hostname, pid, pid_start, "
                "run_id, started, heartbeat) values (?, ?, ?, ?, ?, ?, ?) "
                "returning id",
                (liveness.host_identity(), socket.gethostname(), self._pid,
                 liveness.process_start(self._pid), self._run_id(), now,
                 now)).fetchall()
            self._holder = rows[0][0]
            self._holder_new = True
        return self._holder

    def _run_id(self):
        try:
            return self.run_id_source() if self.run_id_source else None
        except Exception:
            return None

    def holder_id(self):
        """This process's holder id, or None if it never took anything."""
        return self._holder if self._pid == os.getpid() else None

    def forget_holder(self):
        """Register afresh at the next lease (recovery removed this holder)."""
        self._holder = None

    def _ensure_heartbeat(self):
        self._ensure_exit_hook()
        if self._heartbeat_thread is None:
            self._heartbeat_thread = threading.Thread(
                target=self._heartbeat_loop, name="hueyscope-lease-heartbeat",
                daemon=True)
            self._heartbeat_thread.start()

    def _heartbeat_loop(self):
        # Another host tells this process alive by its heartbeat alone. Each
        # beat also settles leases released by workers that went idle.
        pid = self._pid
        while not self._stop_heartbeat.wait(HEARTBEAT_INTERVAL):
            if os.getpid() != pid:
                return
            self.heartbeat()

    def heartbeat(self):
        """Note this process alive (and its run id, once it has one)."""
        if self.holder_id() is None:
            return
        try:
            with self.db(commit=True) as curs:
                QueueCursor(self, curs).execute(
                    "update hueyscope_holder set heartbeat = ?, "
                    "run_id = coalesce(run_id, ?) where id = ?",
                    (time.time(), self._run_id(), self._holder))
        except Exception:
            pass  # the next beat tries again; a busy queue is no failure

    # -- what LeasedHuey tells the storage --------------------------------

    def _thread(self):
        """The calling thread's lease state: the lease just handed over (not
        yet bound to a task) and the leases its next write releases."""
        local = self._local
        if not hasattr(local, "release"):
            local.lease = local.seq = local.next = None
            local.release = []
        return local

    def note_task(self, task):
        """Bind the lease just handed to this thread to ``task``."""
        local = self._thread()
        lease, local.lease = local.lease, None
        if lease is None:
            return
        held = _Held(lease, local.seq, task.on_complete is not None)
        held.task = (task.id, task.name, task.priority)
        with self._held_lock:
            self._held.setdefault(task.id, []).append(held)

    def _find(self, task_id, pop=False):
        if not pop:  # a read: one dict and one list lookup, atomic as they are
            entries = self._held.get(task_id)
            try:
                return entries[0] if entries else None
            except IndexError:  # emptied by another thread meanwhile
                return None
        with self._held_lock:
            entries = self._held.get(task_id)
            if not entries:
                return None
            held = entries.pop(0)
            if not entries:
                del self._held[task_id]
            return held

    def owns(self, task_id):
        """True if this process holds a lease of ``task_id`` not yet settled."""
        return self._find(task_id) is not None

    def release_with_next_write(self, task_id, signal=None):
        """Release the lease of ``task_id`` in the calling thread's next write.

        ``signal``: the outcome it is released for, if not the last noted.
        """
        held = self._find(task_id, pop=True)
        if held is not None:
            self._settle(held, signal)
            self._thread().release.append(held.lease)

    def note_signal(self, task_id, signal):
        """The latest outcome of a held task (what its release records)."""
        held = self._find(task_id)
        if held is not None:
            held.last = signal

    def _settle(self, held, signal=None):
        signal = signal or held.last
        if self.record_outcomes and signal is not None and held.task is not None:
            self._settling[held.lease] = held.task + (signal,)

    def _write_outcomes(self, curs, ids):
        """The outbox rows of the leases ``ids`` released in this transaction."""
        if not self._settling:
            return
        rows, now, run_id = [], time.time(), None
        for lease in ids:
            outcome = self._settling.pop(lease, None)
            if outcome is not None:
                if run_id is None:
                    run_id = self._run_id()
                task_id, name, priority, signal = outcome
                rows.append((self.name, task_id, name, signal, priority, run_id, now))
        if rows:
            QueueCursor(self, curs).executemany(
                "insert into hueyscope_settled (queue, task_id, task, signal, "
                "priority, run_id, ts) values (?, ?, ?, ?, ?, ?, ?)", rows)

    def result_releases(self, task_id):
        """Whether storing ``task_id``'s result should release its lease."""
        # A pipeline step keeps its lease until its continuation is
        # enqueued: recovery finds the result stored and enqueues the next
        # step itself.
        held = self._find(task_id)
        return held is not None and not held.chained

    def keep_lease(self, task_id):
        """The task was interrupted: its lease stays, to be put back on the queue."""
        held = self._find(task_id)
        if held is not None:
            held.keep = True

    def keep_unwritten(self, task_id):
        """The write of ``task_id``'s outcome failed: keep what it would release.

        Returns True if a lease is kept. It stays in the queue under this
        process until recovery (at this consumer's stop, or once the
        process is gone) settles it as its stored result says.
        """
        own = self._own_releases()
        for lease in own:
            self._settling.pop(lease, None)
        held = self._find(task_id)
        if held is not None:
            held.keep = True
        return bool(own) or held is not None

    def finish(self, task_id):
        """The worker is done with ``task_id``: release what is still held.

        The release rides on the process's next write (usually the next
        dequeue), or is written at exit. An interrupted task keeps its
        lease, which goes back on the queue when the process stops (or when
        recovery finds it).
        """
        held = self._find(task_id, pop=True)
        if held is not None and not held.keep:
            self._settle(held)
            self._pending.append(held.lease)
        # Releases this thread marked for a write that never came (a result
        # of None is not stored, a revoked task writes nothing): any write
        # of the process may now carry them.
        self._pending.extend(self._own_releases())

    def park_current(self, reason, message=None, kind="dropped",
                     error_type=None, fingerprint=None):
        """Move a lease to the failed set, its message as it was taken.

        The lease of ``message`` (a task this process holds), else the one
        just handed to this thread (a message no task could be built from).
        ``kind``: 'dropped' (a task this consumer does not have) or 'failed'
        (see :meth:`fail_current`).
        """
        task_id = getattr(message, "id", None)
        held = self._find(task_id, pop=True) if task_id is not None else None
        if held is not None:
            lease = held.lease
        else:
            local = self._thread()
            lease, local.lease = local.lease, None
        if lease is None:
            return
        name = getattr(message, "name", None)
        # A lone surrogate in an error message (a file name that is not
        # UTF-8) is text no database takes: escaped, as the event store does.
        from hueyscope.storable import text

        with self.db(commit=True) as curs:
            curs = QueueCursor(self, curs)
            curs.execute(
                "insert into hueyscope_dead_letter (queue, task_id, task, data, "
                "priority, reason, run_id, parked, kind, error_type, "
                "fingerprint) select queue, ?, ?, data, priority, ?, ?, ?, ?, "
                "?, ? from hueyscope_lease where id = ?",
                (text(task_id), text(name), text(reason), text(self._run_id()),
                 time.time(), kind, text(error_type), fingerprint, lease))
            curs.execute("delete from hueyscope_lease where id = ?", (lease,))
            if held is not None:
                self._settle(held, "error" if kind == "failed" else kind)
                self._write_outcomes(curs.cursor, [lease])

    def fail_current(self, task, exc):
        """The task failed for good: its message goes to the failed set.

        What ``hueyscope retry`` puts back on the queue, and ``hueyscope
        discard`` deletes. The fingerprint is the event store's, so a group
        of failures in the report is a group here too.
        """
        if not self.owns(task.id):
            return
        from hueyscope.events.recorder import fingerprint
        from hueyscope.storable import str_of

        error_type = type(exc).__name__ if exc is not None else None
        message = str_of(exc)[:4000] if exc is not None else ""
        reason = "%s: %s" % (error_type, message) if error_type else "failed"
        self.park_current(reason, task, kind="failed", error_type=error_type,
                          fingerprint=fingerprint(
                              error_type, message,
                              getattr(exc, "__traceback__", None)))

    def _own_releases(self):
        """Take the leases the calling thread's write is to release."""
        local = self._thread()
        own, local.release = local.release, []
        return own

    def _unrelease_own(self, own):
        """A write rolled back: its thread's leases are released by the next one."""
        if own:
            self._thread().release[:0] = own

    def release_pending(self):
        """Write any release still waiting for a transaction (idle workers)."""
        if (self._pending or self._thread().release) and self._pid == os.getpid():
            with self.db(commit=True):
                pass

    def _ensure_exit_hook(self):
        # Releases ride on the next write; a process that stops has none, so
        # a task that finished just before a graceful stop would run again
        # after recovery. multiprocessing's finalizers run at the exit of
        # the main process (through atexit) and of its forked children.
        if self._exit_hook is None or self._exit_hook[0] != os.getpid():
            ref = weakref.ref(self)
            hook = multiprocessing.util.Finalize(
                None, lambda: ref() is not None and ref().settle_at_exit(),
                exitpriority=20)
            self._exit_hook = (os.getpid(), hook)

    def settle_at_exit(self):
        """Write the releases still due; put back what this process holds.

        What it holds at exit was taken and never finished (interrupted, or
        never started): it goes back on the queue now, as recovery would
        put it back later. Never raises: the process is on its way out.
        """
        if self._pid != os.getpid() or self._holder is None:
            return 0
        with self._held_lock:
            held = [h.lease for entries in self._held.values() for h in entries]
            self._held.clear()
        local = self._thread()
        if local.lease is not None:
            held.append(local.lease)
            local.lease = None
        try:
            with self.db(commit=True) as curs:
                curs = QueueCursor(self, curs)
                if held:
                    self._put_back(curs, held)
                # Nothing left to recover from this process: status shows
                # no holder for it.
                curs.execute(
                    "delete from hueyscope_holder where id = ? and not exists "
                    "(select 1 from hueyscope_lease where holder = ?) and not "
                    "exists (select 1 from hueyscope_lock where holder = ?)",
                    (self._holder, self._holder, self._holder))
            self._holder = None
        except Exception:
            logger.warning("Could not settle this process's leases at exit; "
                           "recovery will put them back.", exc_info=True)
            return 0
        return len(held)

    def _put_back(self, curs, ids):
        """Put the leases ``ids`` back on the queue as they were taken."""
        marks = ",".join("?" * len(ids))
        curs.execute("insert into {task} (queue, data, priority) select queue, "
                     "data, priority from hueyscope_lease where id in (%s) "
                     "order by id" % marks, ids)
        curs.execute("delete from hueyscope_lease where id in (%s)" % marks, ids)

    # -- locks, with their holder --------------------------------------------

    def put_if_empty(self, key, value, ttl=None):
        if not _is_lock(key):
            return super().put_if_empty(key, value, ttl)
        if ttl is not None:
            raise NotImplementedError("ttl is not supported by this storage.")
        with self.db(commit=True) as curs:
            run = QueueCursor(self, curs)
            run.execute("insert into {kv} (queue, key, value) values (?, ?, ?) "
                        "on conflict do nothing",
                        (self.name, key, self.to_blob(value)))
            if curs.rowcount != 1:
                return False
            run.execute(
                "insert into hueyscope_lock (queue, key, holder, worker, taken) "
                "values (?, ?, ?, ?, ?) on conflict (queue, key) do update set "
                "holder = excluded.holder, worker = excluded.worker, "
                "taken = excluded.taken",
                (self.name, key, self._holder_in(curs),
                 threading.current_thread().name, time.time()))
        self._ensure_heartbeat()
        return True

    def delete_data(self, key):
        if not _is_lock(key):
            return super().delete_data(key)
        with self.db(commit=True) as curs:
            run = QueueCursor(self, curs)
            run.execute("delete from {kv} where queue = ? and key = ?",
                        (self.name, key))
            deleted = curs.rowcount == 1
            run.execute("delete from hueyscope_lock where queue = ? and key = ?",
                        (self.name, key))
        return deleted

    def close(self):
        self._stop_heartbeat.set()
        return super().close()


class LeasedSqliteStorage(LeaseKeeping, DurableSqliteStorage):
    """huey's SQLite storage with leased dequeue (see the module docstring).

    Takes SqliteStorage's options plus ``synchronous`` (FULL or NORMAL).
    Tables of huey's stay as huey makes them; ours are named ``hueyscope_*``.
    """

    ddl = DurableSqliteStorage.ddl + DDL
    leased = True
    queue_tables = {"kv": "kv", "task": "task"}
    param_style = "qmark"
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

    def _release_in(self, curs):
        """Delete the leases due for release, inside the open transaction."""
        own = self._own_releases()
        ids = list(own)
        while self._pending:
            try:
                ids.append(self._pending.popleft())
            except IndexError:
                break
        if ids:
            curs.execute("delete from hueyscope_lease where id in (%s)"
                         % ",".join("?" * len(ids)), ids)
            self._write_outcomes(curs, ids)
        # No message is leased ahead here: this transaction may be about to
        # enqueue a retry or a continuation of higher priority than what is
        # queued now (only a result's group commit, which enqueues nothing,
        # leases the worker's next message).
        return ids, own, None

    def _unrelease(self, released):
        # The transaction rolled back: the leases are still held.
        if self._holder_new:
            self._holder = None
            self._holder_new = False
        if not released:
            return
        ids, own, prefetched = released
        if prefetched is not None:
            self._local.next = None
            self._unstarted.discard(prefetched[0])
        self._pending.extend(lease for lease in ids if lease not in own)
        self._unrelease_own(own)

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
                ids = [r.lease for r in batch]
                curs.execute("delete from hueyscope_lease where id in (%s)"
                             % ",".join("?" * len(ids)), ids)
                self._write_outcomes(curs, ids)
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
        """Lease the next ``n`` messages, inside the open transaction."""
        rows = curs.execute(
            "select id, data, priority from task where queue = ? "
            "order by priority desc, id limit ?", (self.name, n)).fetchall()
        if not rows:
            return []
        holder, now = self._holder_in(curs), time.time()
        taken = []
        for row_id, data, priority in rows:
            curs.execute(
                "insert into hueyscope_lease (queue, data, priority, holder, "
                "taken) values (?, ?, ?, ?, ?)",
                (self.name, data, priority, holder, now))
            self._taken += 1
            taken.append((curs.lastrowid, data, self._taken))
        ids = [r[0] for r in rows]
        curs.execute("delete from task where id in (%s)" % ",".join("?" * len(ids)),
                     ids)
        return taken

    def taken_seq(self):
        """The order in which this process took the calling thread's task."""
        return self._thread().seq

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


class _Held:
    """A lease this process holds for a task: what settling it needs to know."""

    __slots__ = ("lease", "seq", "chained", "keep", "task", "last")

    def __init__(self, lease, seq, chained):
        self.lease, self.seq, self.chained, self.keep = lease, seq, chained, False
        self.task = None  # (id, name, priority)
        self.last = None  # the latest outcome signal seen


class _ResultWrite:
    """A result waiting for the group commit, and what the commit gave back."""

    __slots__ = ("key", "value", "lease", "done", "error", "next")

    def __init__(self, key, value, lease):
        self.key, self.value, self.lease = key, value, lease
        self.done, self.error, self.next = False, None, None


class LeasedHuey:
    """A Huey mixin for leased storages: tells the storage when an outcome is written.

    Used by :class:`SqliteHuey` and by :class:`hueyscope.postgres.PostgresHuey`
    (``leased=True``); the storage does the leasing and releasing. In
    immediate mode huey swaps in its MemoryStorage, which leases nothing:
    every hook below then leaves huey to do exactly what it does.

    Whatever consumer runs the Huey -- hueyscope's, huey's ``huey_consumer``,
    ``create_consumer()`` in a thread or a process, Django's ``run_huey`` --
    the dead holders' leases go back on the queue at the first dequeue of
    each process and then every :data:`RECOVER_EVERY` seconds (hueyscope's
    consumer runs recovery itself, with its own settings, and turns this
    off).
    """

    #: Run recovery from the dequeue path (set False by hueyscope's consumer).
    recover_on_dequeue = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.storage.run_id_source = self._recorded_run_id

    def create_storage(self):
        storage = super().create_storage()
        storage.run_id_source = self._recorded_run_id
        return storage

    @property
    def _leases(self):
        """The leased storage, or None (immediate mode's memory storage)."""
        storage = self.storage
        return storage if getattr(storage, "leased", False) else None

    def _recorded_run_id(self):
        from hueyscope.events.recorder import recorder_for

        recorder = recorder_for(self)
        if recorder is not None and recorder.pid == os.getpid():
            return recorder.run_id
        return None

    def dequeue(self):
        leases = self._leases
        if leases is None:
            return super().dequeue()
        if self.recover_on_dequeue:
            self._recover_when_due(leases)
        while True:
            data = leases.dequeue()
            if data is None:
                return None
            try:
                task = self.deserialize_task(data)
            except Exception as exc:
                # Code deployed without this task, or a message it cannot
                # read: stock huey drops it; it is parked, with the reason,
                # and recorded as dropped; the worker takes the next one.
                self._park_unreadable(data, exc)
                continue
            leases.note_task(task)
            return task

    def _recover_when_due(self, leases):
        # One worker of the process recovers; the others go on dequeuing.
        now = time.monotonic()
        if now < leases._next_recovery or not leases._recover_lock.acquire(False):
            return
        try:
            leases._next_recovery = now + RECOVER_EVERY
            from hueyscope.recovery import recover

            recover(self)
            if leases.record_outcomes:
                from hueyscope.events.reconcile import reconcile

                reconcile(self)
        except Exception:
            logger.exception("Could not recover the leases of dead consumers.")
        finally:
            leases._recover_lock.release()

    def _park_unreadable(self, data, exc):
        reason = "%s: %s" % (type(exc).__name__, exc)
        try:
            message = self.serializer.deserialize(data)
        except Exception:
            message = None
        self.storage.park_current(reason, message)
        logger.warning("Parked a message this consumer cannot run (%s) in "
                       "hueyscope_dead_letter.", reason)
        if message is not None:
            self._emit("dropped", UnknownTask(message), exc)

    def execute(self, task, timestamp=None):
        leases = self._leases
        try:
            return super().execute(task, timestamp)
        except Exception:
            # What makes the outcome durable comes after the task ran: its
            # result, its next pipeline step's enqueue, its retry's. That
            # write failed (for good: transient failures were retried), so
            # the lease is kept for recovery, which enqueues a step's next
            # step from its stored result, or runs the task again.
            if leases is not None and leases.keep_unwritten(task.id):
                logger.error("The outcome of task %s could not be written; its "
                             "lease is kept for recovery.", task.id)
            raise
        finally:
            if leases is not None:
                leases.finish(task.id)

    def put_result(self, key, data):
        leases = self._leases
        if leases is not None and not isinstance(data, Error) \
                and leases.result_releases(key):
            leases.release_with_next_write(key, S.SIGNAL_COMPLETE)
        return super().put_result(key, data)

    def add_schedule(self, task):
        # Not due yet, or a retry with a delay: the message moves to the
        # schedule in the same transaction as its lease is released.
        if self._leases is not None:
            self._leases.release_with_next_write(task.id, S.SIGNAL_SCHEDULED)
        return super().add_schedule(task)

    def _emit(self, signal, task, *args, **kwargs):
        leases = self._leases
        if leases is None:
            pass
        elif signal == S.SIGNAL_COMPLETE or signal == S.SIGNAL_RETRYING:
            # Next come the continuation's enqueue or the retry's.
            leases.release_with_next_write(task.id, signal)
        elif (signal == S.SIGNAL_ERROR or signal == S.SIGNAL_TIMEOUT) \
                and not task.retries:
            # A final failure: its message joins the failed set, in a
            # transaction of its own; its error result (or on_error task)
            # is written next.
            try:
                exc = args[0] if args else kwargs.get("exc") or sys.exc_info()[1]
                leases.fail_current(task, exc)
            except Exception:
                logger.exception("Could not keep failed task %s in the failed "
                                 "set; its lease is released.", task.id)
                leases.release_with_next_write(task.id)
        elif signal == S.SIGNAL_INTERRUPTED:
            leases.keep_lease(task.id)
        elif signal in NOTED_OUTCOMES:
            leases.note_signal(task.id, signal)
        super()._emit(signal, task, *args, **kwargs)

    def flush_locks(self, *names):
        """Free the locks whose holder is dead; a live holder's lock stays held.

        huey's flush_locks frees every lock, a live consumer's too (two
        locked bodies then run at once). Locks taken by a process that does
        not record its holder (huey's own storage) are freed too: they can
        belong to no process we can check.
        """
        if self._leases is None:
            return super().flush_locks(*names)
        from hueyscope.recovery import free_dead_locks

        return set(free_dead_locks(self, names=names, unowned=True))


class SqliteHuey(OncePerTick, LeasedHuey, _HueySqliteHuey):
    """huey's SqliteHuey with at-least-once delivery (a leased queue).

    A drop-in replacement: ``SqliteHuey("app", filename="queue.db")``. A
    consumer killed mid-task leaves its tasks leased; the next consumer (or
    ``hueyscope recover``) puts them back on the queue and frees their locks.
    Periodic tasks run once per tick however many consumers share the queue.
    """

    storage_class = LeasedSqliteStorage
