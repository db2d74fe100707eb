"""What a running task can ask of hueyscope: am I canceled, wait, report progress.

A task calls these from its own body; outside a task run by a hueyscope
consumer they do nothing (``cancelled()`` is False, ``sleep`` sleeps,
``progress`` records nothing), so the same function runs in a test or a
shell unchanged::

    @huey.task()
    def export(rows):
        for i, row in enumerate(rows):
            if hueyscope.cancelled():
                raise hueyscope.TaskCanceled("stopped at row %d" % i)
            write(row)
            hueyscope.progress(i / len(rows), "row %d" % i)

Each task a worker runs has a :class:`Running` entry here while it runs, in
the process that runs it: the consumer marks it canceled (see
:mod:`hueyscope.consumer.control`), the task reads the mark. Registering
costs a dict entry per task; nothing else happens unless a task is
canceled, has a time limit, or reports progress.
"""
import threading
import time

from huey.exceptions import CancelExecution

# Seconds between two progress values of one task that are recorded: the
# last value of a burst is kept and written with the next one due.
PROGRESS_EVERY = 1.0


class TaskCanceled(CancelExecution):
    """The task was canceled: it stops, and is not retried.

    Raised in a canceled task's thread (at its next bytecode, as the last
    resort) or by the task itself; huey records it as ``canceled``.
    """

    reason = "canceled"

    def __init__(self, msg=None, retry=False):
        super().__init__(msg if msg is not None else self.reason, retry=retry)


class Running:
    """A task being run by a worker of this process, and what was asked of it."""

    __slots__ = ("task", "huey", "thread_id", "canceled", "reason", "last_progress",
                 "progress_due", "attempt", "logs", "cancel_deadline")

    def __init__(self, task, thread_id, huey=None):
        self.task = task
        self.huey = huey
        self.thread_id = thread_id
        self.canceled = threading.Event()
        self.reason = None
        self.last_progress = None  # monotonic time of the last recorded value
        self.progress_due = None  # a value throttled, written with the next
        self.attempt = None
        self.logs = 0  # log records kept for this run of the task
        self.cancel_deadline = None  # when the consumer stops it by force

    def cancel(self, reason):
        """Mark the task canceled (what ``cancelled()`` and ``sleep`` see)."""
        self.reason = reason
        self.canceled.set()


_local = threading.local()
_by_task = {}  # task id -> Running, for every task run by this process now
_lock = threading.Lock()


def begin(task, huey=None):
    """Note that the calling thread runs ``task`` (of ``huey``); returns its
    :class:`Running`."""
    running = Running(task, threading.get_ident(), huey)
    _local.running = running
    _by_task[task.id] = running
    return running


def end(running):
    """The calling thread is done with ``running``'s task."""
    _local.running = None
    if _by_task.get(running.task.id) is running:
        _by_task.pop(running.task.id, None)


def current():
    """The :class:`Running` of the task the calling thread runs, or None."""
    return getattr(_local, "running", None)


def running(task_id):
    """The :class:`Running` of ``task_id`` in this process, or None."""
    return _by_task.get(task_id)


def running_ids():
    """The ids of the tasks this process runs now."""
    return list(_by_task)


def cancelled():
    """True if the task the calling thread runs was asked to stop.

    A task that checks it stops when it likes (raise :class:`TaskCanceled`
    to be recorded ``canceled``); one that does not is stopped all the same
    after a grace period.
    """
    running = current()
    return running is not None and running.canceled.is_set()


def check_cancelled():
    """Raise :class:`TaskCanceled` if the calling task was asked to stop."""
    running = current()
    if running is not None and running.canceled.is_set():
        raise TaskCanceled(running.reason)


def sleep(seconds):
    """Sleep like ``time.sleep``, but raise :class:`TaskCanceled` at once if
    the task is canceled meanwhile.

    A thread blocked in ``time.sleep`` (or any C call) cannot be interrupted
    until the call returns; a task that waits through this function stops
    within the consumer's poll interval.
    """
    running = current()
    if running is None:
        time.sleep(seconds)
        return
    if running.canceled.wait(seconds):
        raise TaskCanceled(running.reason)


def progress(fraction, message=None):
    """Record how far the calling task is: ``fraction`` from 0 to 1, and a note.

    Throttled: at most one value a second per task reaches the event store
    (a burst keeps its last value, written with the next one due); the
    last value of a task is always kept. Outside a task run by a hueyscope
    consumer, or without a recorder, it does nothing. Never raises for a
    value out of range: it is clamped.
    """
    running = current()
    if running is None:
        return
    try:
        fraction = min(max(float(fraction), 0.0), 1.0)
    except (TypeError, ValueError):
        fraction = None
    if message is not None:
        message = str(message)[:500]
    now = time.monotonic()
    last = running.last_progress
    if last is not None and now - last < PROGRESS_EVERY and fraction != 1.0:
        running.progress_due = (time.time(), fraction, message)
        return
    running.last_progress = now
    running.progress_due = None
    _record_progress(running, time.time(), fraction, message)


def flush_progress(running):
    """Write a throttled progress value still due (the task has ended)."""
    due = running.progress_due
    if due is not None:
        running.progress_due = None
        _record_progress(running, *due)


def _record_progress(running, ts, fraction, message):
    from hueyscope.events.recorder import recorder_for

    recorder = recorder_for(running.huey) if running.huey is not None else None
    if recorder is not None:
        recorder.progress(running.task, ts, fraction, message)
