"""Leases: what every leased storage shares, whatever its engine.

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

:mod:`hueyscope.queue.recovery` puts the leases of dead holders back on the queue.
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
import logging
import multiprocessing.util
import os
import socket
import threading
import time
import weakref

from huey import signals as S

from hueyscope.queue import liveness
from hueyscope.queue.messages import ControlledMessages
from hueyscope.queue.tables import LOCK_MARK, QueueCursor
from hueyscope.settings import configured_redaction
from hueyscope.signals import fingerprint
from hueyscope.storable import str_of, text

logger = logging.getLogger("hueyscope.leases")

HEARTBEAT_INTERVAL = 5.0  # seconds between a holder's heartbeats
# Seconds between recoveries run from the dequeue path (huey's own health
# check interval).
RECOVER_EVERY = 10.0
# Outcomes after which the task is on the queue again (its unique key kept).
AGAIN = frozenset((S.SIGNAL_RETRYING, S.SIGNAL_SCHEDULED))
# Final outcomes that release a lease through the next write of the process.
NOTED_OUTCOMES = frozenset((S.SIGNAL_REVOKED, S.SIGNAL_EXPIRED, S.SIGNAL_CANCELED,
                            S.SIGNAL_LOCKED, S.SIGNAL_RATE_LIMITED))
# Of those, the ones after which the task must never run, released at once:
# huey consumes a revocation as it acts on it (and an expired task would
# only expire again), so a crash before the next write would leave
# recovery a lease with nothing to say the task is not to run -- and it
# would run. They are rare; one transaction each is cheap.
NEVER_AGAIN = frozenset((S.SIGNAL_REVOKED, S.SIGNAL_EXPIRED, S.SIGNAL_CANCELED))


def _is_lock(key):
    """Whether a kv key is a ``lock_task`` lock (huey's are str; any other
    key, bytes too, goes to huey's storage untouched)."""
    return isinstance(key, str) and LOCK_MARK in key


class LeaseKeeping(ControlledMessages):
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
    redaction = None

    def redactor(self):
        """The redaction of the failed set's reasons: the recorder's when one
        is attached, else the configured one (``--redact``, HUEYSCOPE_REDACT)."""
        if self.redaction is None:
            self.redaction = configured_redaction()
        return self.redaction

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
        # Lease id -> unique key of a message taken with one (queue.control);
        # then, once its outcome is final, lease id -> (key, task id) of the
        # row its releasing transaction deletes. Empty when no task is unique.
        self._unique_leases = {}
        self._unique_drop = {}

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
            self._unique_outcome(held, signal not in AGAIN)
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
        dequeue), or is written at exit; that of a revoked, expired or
        canceled task is written now (see :data:`NEVER_AGAIN`). An
        interrupted task keeps its lease, which goes back on the queue when
        the process stops (or when recovery finds it).
        """
        held = self._find(task_id, pop=True)
        at_once = False
        if held is not None and not held.keep:
            self._settle(held)
            self._unique_outcome(held, True)
            self._pending.append(held.lease)
            at_once = held.last in NEVER_AGAIN
        # Releases this thread marked for a write that never came (a result
        # of None is not stored, a revoked task writes nothing): any write
        # of the process may now carry them.
        self._pending.extend(self._own_releases())
        if at_once:
            self.release_pending()

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
            self._unique_outcome(held, True)
        else:
            local = self._thread()
            lease, local.lease = local.lease, None
            key = self._unique_leases.pop(lease, None)
            if key is not None and task_id is not None:  # parked for good
                self._unique_drop[lease] = (key, task_id)
        if lease is None:
            return
        name = getattr(message, "name", None)
        # The reason quotes an error, or a message no task could be built
        # from: secrets in it are redacted as the event store's are.
        reason = self.redactor().text(reason)
        # A lone surrogate in an error message (a file name that is not
        # UTF-8) is text no database takes: escaped, as the event store does.
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
            self._drop_unique(curs.cursor, [lease])
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
        error_type = type(exc).__name__ if exc is not None else None
        # Redacted and cut as the event store's error (hueyscope.events.
        # capture), so its fingerprint is the store's.
        message = self.redactor().message(str_of(exc)) if exc is not None else ""
        reason = "%s: %s" % (error_type, message) if error_type else "failed"
        self.park_current(reason, task, kind="failed", error_type=error_type,
                          fingerprint=fingerprint(
                              error_type, message,
                              getattr(exc, "__traceback__", None)))

    def _release_in(self, curs):
        """Delete the leases due for release, inside the open transaction.

        Returns ``(ids, own)``: every lease deleted, and those of the
        calling thread's own write (see :meth:`_unrelease`).
        """
        own = self._own_releases()
        ids = list(own)
        while self._pending:
            try:
                ids.append(self._pending.popleft())
            except IndexError:  # another thread's transaction took it
                break
        if ids:
            self._delete_leases(curs, ids)
        return ids, own

    def _delete_leases(self, curs, ids):
        """Delete the leases ``ids`` settled by this transaction, with their
        outbox rows."""
        QueueCursor(self, curs).execute(
            "delete from hueyscope_lease where id in (%s)"
            % ",".join("?" * len(ids)), ids)
        self._write_outcomes(curs, ids)
        if self._unique_drop:
            self._drop_unique(curs, ids)

    def _unrelease(self, released):
        """The transaction of :meth:`_release_in` rolled back: the leases are
        still held, and due for the next write again."""
        if not released:
            return
        ids, own = released
        self._pending.extend(lease for lease in ids if lease not in own)
        self._unrelease_own(own)

    def taken_seq(self):
        """The order in which this process took the calling thread's task."""
        return self._thread().seq

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
        curs.execute("insert into {task} (queue, data, priority, hueyscope_name, "
                     "hueyscope_unique, hueyscope_slot, hueyscope_limit) "
                     "select queue, data, priority, task, unique_key, slot, "
                     "slot_limit from hueyscope_lease where id in (%s) "
                     "order by id" % marks, ids)
        for lease in ids:  # back on the queue, holding its key
            self._unique_leases.pop(lease, None)
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


class _Held:
    """A lease this process holds for a task: what settling it needs to know."""

    __slots__ = ("lease", "seq", "chained", "keep", "task", "last")

    def __init__(self, lease, seq, chained):
        self.lease, self.seq, self.chained, self.keep = lease, seq, chained, False
        self.task = None  # (id, name, priority)
        self.last = None  # the latest outcome signal seen


