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
    "insert or ignore into hueyscope_meta (key, value) "
    "values ('lease_schema', %d)" % LEASE_SCHEMA,
]


# Columns lease schema 2 added to hueyscope_dead_letter.
DEAD_LETTER_COLUMNS = ("kind", "error_type", "fingerprint")


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

    def execute(self, sql, params=()):
        sql = sql.format(**self.tables)
        if self.pyformat:
            sql = sql.replace("?", "%s")
        return self.cursor.execute(sql, params)


class LeaseKeeping:
    """What every leased storage does alike, through :class:`QueueCursor`.

    The process's holder row and its heartbeat, the calling thread's lease
    (the task it runs) and what the Huey tells about it (:class:`LeasedHuey`),
    parking, and ``lock_task`` locks with their holder. A storage adds the
    leasing dequeue and ``db()`` transactions that delete the leases in
    ``_pending`` (and the thread's own, once its outcome is written).
    """

    def _reset_lease_state(self):
        self._pid = os.getpid()
        self._local = threading.local()
        self._holder = None
        self._holder_new = False  # registered in a transaction not yet committed
        self._pending = collections.deque()  # lease ids to release at the next write
        self._heartbeat_thread = None
        self._stop_heartbeat = threading.Event()

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

    def note_task(self, task):
        """The calling thread's lease holds ``task`` (its id and pipeline)."""
        local = self._local
        local.task_id = task.id
        local.chained = task.on_complete is not None

    def owns(self, task_id):
        """True if the calling thread holds the lease of ``task_id``."""
        local = self._local
        return (getattr(local, "lease", None) is not None
                and getattr(local, "task_id", None) == task_id)

    def release_with_next_write(self, task_id):
        """Release this thread's lease of ``task_id`` in the next write transaction."""
        if self.owns(task_id):
            self._local.release_on_write = True

    def result_releases(self, task_id):
        """Whether storing ``task_id``'s result should release its lease."""
        # A pipeline step keeps its lease until its continuation is
        # enqueued: recovery finds the result stored and enqueues the next
        # step itself.
        return self.owns(task_id) and not self._local.chained

    def keep_lease(self, task_id):
        """The task was interrupted: its lease stays, to be put back on the queue."""
        if self.owns(task_id):
            self._local.keep = True

    def finish(self, task_id):
        """The worker is done with ``task_id``: release what is still held.

        An interrupted task keeps its lease, which goes back on the queue
        when the consumer stops (or when recovery finds it).
        """
        local = self._local
        lease = getattr(local, "lease", None)
        if lease is None or local.task_id != task_id:
            return
        local.lease = None
        local.release_on_write = False
        if not local.keep:
            self._pending.append(lease)
        local.keep = False

    def park_current(self, reason, message=None, kind="dropped",
                     error_type=None, fingerprint=None):
        """Move this thread's lease to the failed set, its message as it was taken.

        ``kind``: 'dropped' (a task this consumer does not have) or 'failed'
        (see :meth:`fail_current`).
        """
        local = self._local
        lease = getattr(local, "lease", None)
        if lease is None:
            return
        local.lease = None
        local.release_on_write = False
        task_id = getattr(message, "id", None)
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

    def release_pending(self):
        """Write any release still waiting for a transaction (idle workers)."""
        if self._pending and self._pid == os.getpid():
            with self.db(commit=True):
                pass

    # -- locks, with their holder --------------------------------------------

    def put_if_empty(self, key, value, ttl=None):
        key = key.decode("utf-8") if isinstance(key, bytes) else key
        if LOCK_MARK not in key:
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
        key = key.decode("utf-8") if isinstance(key, bytes) else key
        if LOCK_MARK not in key:
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
        local = self._local
        own = getattr(local, "lease", None) if getattr(local, "release_on_write", False) else None
        ids = []
        while self._pending:
            try:
                ids.append(self._pending.popleft())
            except IndexError:
                break
        if own is not None:
            ids.append(own)
            local.lease = None
            local.release_on_write = False
        if ids:
            curs.execute("delete from hueyscope_lease where id in (%s)"
                         % ",".join("?" * len(ids)), ids)
        prefetched = None
        if own is not None and self.prefetch and getattr(local, "next", None) is None:
            taken = self._take(curs, 1)
            if taken:
                prefetched = local.next = taken[0]
                self._unstarted.add(prefetched[0])
        return ids, own, prefetched

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
        for lease in ids:
            if lease != own:
                self._pending.append(lease)
        if own is not None:
            self._local.lease = own
            self._local.release_on_write = True

    # -- results: group commit ----------------------------------------------

    def put_data(self, key, value, is_result=False):
        # A worker's own result, releasing its lease: workers that finish
        # while another one commits have their results written by the next
        # transaction together, one sync for all (group commit), each with
        # its lease released and its next task leased.
        local = self._local
        if not (is_result and self.prefetch and getattr(local, "release_on_write", False)
                and getattr(local, "lease", None) is not None
                and getattr(local, "next", None) is None):
            return super().put_data(key, value, is_result)
        request = _ResultWrite(key, self.to_blob(value), local.lease)
        local.lease, local.release_on_write = None, False
        with self._group_lock:
            self._group.append(request)
        try:
            with self.lock:
                if not request.done:
                    self._commit_group()
        except Exception:
            # Not written: the lease is still held, as after any failed write.
            local.lease, local.release_on_write = request.lease, True
            raise
        if request.error is not None:  # written by another worker, and failed
            local.lease, local.release_on_write = request.lease, True
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
        local = self._local
        ready = getattr(local, "next", None)
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
        local = self._local
        local.lease, local.seq = lease, seq
        local.task_id = None
        local.release_on_write = local.keep = local.chained = False
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
        return getattr(self._local, "seq", None)

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
        marks = ",".join("?" * len(ids))
        with self.db(commit=True) as curs:
            curs.execute("insert into task (queue, data, priority) select queue, "
                         "data, priority from hueyscope_lease where id in (%s) "
                         "order by id" % marks, ids)
            curs.execute("delete from hueyscope_lease where id in (%s)" % marks, ids)
        self._unstarted.difference_update(ids)
        self._buffer.clear()
        return len(ids)


class _ResultWrite:
    """A result waiting for the group commit, and what the commit gave back."""

    __slots__ = ("key", "value", "lease", "done", "error", "next")

    def __init__(self, key, value, lease):
        self.key, self.value, self.lease = key, value, lease
        self.done, self.error, self.next = False, None, None


class LeasedHuey:
    """A Huey mixin for leased storages: tells the storage when an outcome is written.

    Used by :class:`SqliteHuey` and by :class:`hueyscope.postgres.PostgresHuey`
    (``leased=True``); the storage does the leasing and releasing.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.storage.run_id_source = self._recorded_run_id

    def _recorded_run_id(self):
        from hueyscope.events.recorder import recorder_for

        recorder = recorder_for(self)
        if recorder is not None and recorder.pid == os.getpid():
            return recorder.run_id
        return None

    def dequeue(self):
        while True:
            data = self.storage.dequeue()
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
            self.storage.note_task(task)
            return task

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
            self._emit("dropped", UnknownTask(message), exc=exc)

    def execute(self, task, timestamp=None):
        try:
            return super().execute(task, timestamp)
        finally:
            self.storage.finish(task.id)

    def put_result(self, key, data):
        if not isinstance(data, Error) and self.storage.result_releases(key):
            self.storage.release_with_next_write(key)
        return super().put_result(key, data)

    def add_schedule(self, task):
        # Not due yet, or a retry with a delay: the message moves to the
        # schedule in the same transaction as its lease is released.
        self.storage.release_with_next_write(task.id)
        return super().add_schedule(task)

    def _emit(self, signal, task, *args, **kwargs):
        if signal == S.SIGNAL_COMPLETE or signal == S.SIGNAL_RETRYING:
            # Next come the continuation's enqueue or the retry's.
            self.storage.release_with_next_write(task.id)
        elif (signal == S.SIGNAL_ERROR or signal == S.SIGNAL_TIMEOUT) \
                and not task.retries:
            # A final failure: its message joins the failed set, in a
            # transaction of its own; its error result (or on_error task)
            # is written next.
            try:
                exc = args[0] if args else kwargs.get("exc") or sys.exc_info()[1]
                self.storage.fail_current(task, exc)
            except Exception:
                logger.exception("Could not keep failed task %s in the failed "
                                 "set; its lease is released.", task.id)
                self.storage.release_with_next_write(task.id)
        elif signal == S.SIGNAL_INTERRUPTED:
            self.storage.keep_lease(task.id)
        super()._emit(signal, task, *args, **kwargs)

    def flush_locks(self, *names):
        """Free the locks whose holder is dead; a live holder's lock stays held.

        huey's flush_locks frees every lock, a live consumer's too (two
        locked bodies then run at once). Locks taken by a process that does
        not record its holder (huey's own storage) are freed too: they can
        belong to no process we can check.
        """
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
