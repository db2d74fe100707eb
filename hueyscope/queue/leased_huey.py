"""LeasedHuey: the Huey side of a leased queue, for every engine.

It tells the storage when a task's outcome is being written (so the lease
is released in that write's transaction), steps aside in immediate mode,
and runs recovery from the dequeue path under any consumer.
"""
import logging
import sys
import time

from huey import signals as S
from huey.api import ResultGroup, Task
from huey.utils import Error

from hueyscope.queue import control, recovery
from hueyscope.queue.leases import NOTED_OUTCOMES, RECOVER_EVERY
from hueyscope.signals import UnknownTask

logger = logging.getLogger("hueyscope.leases")


class LeasedHuey:
    """A Huey mixin for leased storages: tells the storage when an outcome is written.

    Used by :class:`SqliteHuey` and by :class:`hueyscope.queue.postgres.LeasedPostgresHuey`
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
    #: Who this process is in the event store: a callable the recorder sets
    #: (``hueyscope.attach``), read for the holder row and the outbox.
    run_id_source = None
    #: Called after each recovery from the dequeue path (the recorder sets
    #: it to reconcile the event store with the queue's outbox).
    after_recovery = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.storage.run_id_source = self._run_id
        self.storage.describe = self._describe

    def create_storage(self):
        storage = super().create_storage()
        storage.run_id_source = self._run_id
        storage.describe = self._describe
        return storage

    def _describe(self, data):
        """What the queue writes beside message ``data``: its task's name,
        concurrency slot and limit (see :mod:`hueyscope.queue.control`)."""
        try:
            message = self.serializer.deserialize(data)
        except Exception:
            return None, None, None  # never held back
        cls = self._registry._registry.get(message.name)
        if cls is None:  # a task this process does not have: no limit known
            return message.name, None, None
        return (message.name,) + control.slot_of(cls, message)

    @property
    def _leases(self):
        """The leased storage, or None (immediate mode's memory storage)."""
        storage = self.storage
        return storage if getattr(storage, "leased", False) else None

    def _run_id(self):
        return self.run_id_source() if self.run_id_source is not None else None

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

    def enqueue(self, task):
        """huey's enqueue; a unique task (see :mod:`hueyscope.queue.control`)
        only while no other task holds its key.

        Returns huey's result handle, or a
        :class:`~hueyscope.queue.control.Deduplicated` when the key is
        held: nothing is enqueued, and the task is recorded
        ``deduplicated``.
        """
        leases = self._leases
        if leases is None or self._immediate or not isinstance(task, Task):
            return super().enqueue(task)
        key = control.unique_key(task, self._registry.task_to_string(type(task)))
        if key is None:
            return super().enqueue(task)
        if task.expires:
            task.resolve_expires(self.utc)
        # huey signals 'enqueued' before it writes; whether a unique task is
        # enqueued is only known once written. Stamped before the write: a
        # worker may run the task before the signal below.
        task.hueyscope_ts = time.time()
        holder = leases.enqueue_unique(self.serialize_task(task), task.priority,
                                       key, task.id)
        if holder is not None:
            self._emit("deduplicated", task, control.KeyHeld(
                "unique key %s is held by task %s" % (key, holder)))
            return control.Deduplicated(self, holder, key)
        self._emit(S.SIGNAL_ENQUEUED, task)
        if not self.results:
            return None
        results = self._pipeline_results(task)
        return ResultGroup(results) if len(results) > 1 else results[0]

    def _recover_when_due(self, leases):
        # One worker of the process recovers; the others go on dequeuing.
        now = time.monotonic()
        if now < leases._next_recovery or not leases._recover_lock.acquire(False):
            return
        try:
            leases._next_recovery = now + RECOVER_EVERY
            recovery.recover(self)
            if self.after_recovery is not None:
                self.after_recovery()
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
        return set(recovery.free_dead_locks(self, names=names, unowned=True))


