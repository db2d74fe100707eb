"""Stopping a running task: cancel requests, and time limits for thread workers.

A cancel request (``hueyscope cancel``, :func:`hueyscope.queue.operations.cancel`)
is a row of ``hueyscope_cancel`` naming the task and the process that holds
it; each consumer looks for rows every :data:`POLL_EVERY` seconds, as SAQ's
and arq's workers look for abort requests in Redis, and acts on those of
its own processes:

- a thread worker's task is marked canceled first: ``hueyscope.cancelled()``
  turns True and ``hueyscope.sleep`` raises. If it has not stopped after
  :data:`CANCEL_GRACE` seconds, :class:`~hueyscope.control.TaskCanceled` is
  raised in its thread at its next bytecode
  (``PyThreadState_SetAsyncExc``). A thread blocked in a C call (a
  ``time.sleep``, a socket read) gets it when the call returns;
- a process worker is sent SIGUSR1 with the request on a shared board: its
  handler raises TaskCanceled (a stop's SIGUSR1, with nothing on the board,
  still raises KeyboardInterrupt). A worker that has not let go of the task
  after three grace periods is killed and replaced by the health check; the
  consumer settles the task's lease and records it canceled itself
  (:func:`hueyscope.queue.cancels.settle_killed`).

huey records the outcome ``canceled``, with the reason (who asked); the
task is not retried, its lease is released with its outcome, its lock freed
as the exception leaves ``lock_task``.

Time limits: huey's ``timeout=`` is enforced by SIGALRM in process workers
and not at all in thread workers. :class:`ControlledThreadEnvironment` gives
thread workers the same limit, by raising huey's ``TaskTimeout`` in the
task's thread when it is due; huey records ``timeout`` and retries as it
does for process workers.
"""
import ctypes
import heapq
import itertools
import json
import logging
import os
import signal
import threading
import time
from contextlib import contextmanager

from huey import consumer as huey_consumer
from huey.exceptions import TaskTimeout

from hueyscope import control

logger = logging.getLogger("hueyscope.consumer")

POLL_EVERY = 0.5  # seconds between two looks for cancel requests
CANCEL_GRACE = 0.5  # seconds a canceled task has to stop on its own
BOARD_BYTES = 8192  # the shared board of cancel requests for worker processes

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)


def raise_in_thread(thread_id, exc_class):
    """Raise ``exc_class`` in thread ``thread_id`` at its next bytecode.

    Returns True if the thread exists. An exception class, not an instance,
    as CPython takes it; it is made when raised.
    """
    done = _set_async_exc(ctypes.c_ulong(thread_id), ctypes.py_object(exc_class))
    if done > 1:  # more than one thread touched: undo, as the C API asks
        _set_async_exc(ctypes.c_ulong(thread_id), ctypes.py_object())
        return False
    return done == 1


def clear_in_thread(thread_id):
    """Take back an exception raised with :func:`raise_in_thread` not yet delivered."""
    _set_async_exc(ctypes.c_ulong(thread_id), ctypes.py_object())


def _exception(base, message):
    # The exception is made in the target thread, from its class alone: a
    # subclass per request carries the message.
    # Pickled (an on_error task's argument, a result) as the base class.
    return type(base.__name__, (base,), {
        "__init__": lambda self, *a: base.__init__(self, message),
        "__reduce__": lambda self: (base, self.args),
        "__module__": base.__module__})


class _Deadline:
    __slots__ = ("thread_id", "exc", "guard", "done", "fired")

    def __init__(self, thread_id, exc, guard):
        self.thread_id, self.exc, self.guard = thread_id, exc, guard
        self.done = self.fired = False


class Watchdog:
    """A thread that raises exceptions in worker threads when they are due.

    One per consumer, started at the first deadline: a consumer whose tasks
    have no time limit and are never canceled never starts it.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._heap = []
        self._seq = itertools.count()
        self._thread = None

    def at(self, when, thread_id, exc, guard=None):
        """Raise ``exc`` in ``thread_id`` at monotonic time ``when``; returns
        the deadline, to :meth:`cancel`.

        ``guard``: called first; nothing is raised unless it returns True
        (the thread is still in the task's body, not in huey's writes).
        """
        deadline = _Deadline(thread_id, exc, guard)
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._seq), deadline))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="hueyscope-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()
        return deadline

    def cancel(self, deadline):
        """The work ``deadline`` limited is over; True if it fired meanwhile.

        An exception fired and not yet delivered is taken back: the task
        ended before it, and keeps its own outcome.
        """
        with self._cond:
            deadline.done = True
            if deadline.fired:
                clear_in_thread(deadline.thread_id)
            return deadline.fired

    def _loop(self):
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and (self._heap[0][2].done or
                                      self._heap[0][0] <= now):
                    _, _, deadline = heapq.heappop(self._heap)
                    if not deadline.done and (deadline.guard is None or
                                              deadline.guard()):
                        deadline.fired = True
                        raise_in_thread(deadline.thread_id, deadline.exc)
                wait = self._heap[0][0] - now if self._heap else None
                self._cond.wait(wait)


class ControlledThreadEnvironment(huey_consumer.ThreadEnvironment):
    """huey's thread environment, with huey's ``timeout=`` enforced."""

    def __init__(self, watchdog, *args):
        super().__init__(*args)
        self.watchdog = watchdog

    @contextmanager
    def timeout(self, seconds):
        deadline = self.watchdog.at(
            time.monotonic() + seconds, threading.get_ident(),
            _exception(TaskTimeout, "timeout (%ss)" % seconds))
        try:
            yield
        finally:
            self.watchdog.cancel(deadline)


# -- worker processes: the board their SIGUSR1 handler reads ------------------

class CancelBoard:
    """Cancel requests for worker processes, in memory shared across fork.

    The consumer writes ``{task id: reason}``; a worker's SIGUSR1 handler
    reads it to tell a cancel from a stop. Made before the workers fork.
    """

    def __init__(self, size=BOARD_BYTES):
        import multiprocessing

        self._array = multiprocessing.get_context("fork").Array("c", size)

    def _read(self):
        raw = self._array.value
        return json.loads(raw.decode("utf-8")) if raw else {}

    def post(self, task_id, reason):
        with self._array.get_lock():
            board = self._read()
            board.pop(task_id, None)
            board[task_id] = reason
            while True:
                raw = json.dumps(board).encode("utf-8")
                if len(raw) < len(self._array) or not board:
                    break
                board.pop(next(iter(board)))  # the oldest request goes
            self._array.value = raw

    def reason(self, task_id):
        """The reason a cancel of ``task_id`` was asked for, or None."""
        if not self._array.get_lock().acquire(timeout=1.0):
            return None
        try:
            return self._read().get(task_id)
        finally:
            self._array.get_lock().release()


def interrupt_handler(process, board):
    """The SIGUSR1 handler of a worker process: a cancel, or a stop."""

    def interrupt(signum, frame):
        in_flight = process.huey._tasks_in_flight
        if not in_flight:
            return
        for task in list(in_flight):
            reason = board.reason(task.id) if board is not None else None
            if reason is not None:
                raise control.TaskCanceled(reason)
        raise KeyboardInterrupt

    return interrupt


# -- the consumer's side -------------------------------------------------------

class Canceller:
    """Looks for the cancel requests of a consumer's tasks and carries them out."""

    def __init__(self, consumer, grace=CANCEL_GRACE):
        self.consumer = consumer
        self.huey = consumer.huey
        self.grace = grace
        self.watchdog = consumer.watchdog
        self.board = getattr(consumer.environment, "board", None)
        self._acted = {}  # task id -> (monotonic time asked, pid or None)

    def poll(self):
        """Carry out the requests for this consumer's tasks; never raises."""
        from hueyscope.queue import cancels

        try:
            requests = cancels.requests(self.huey)
        except Exception:
            logger.debug("Could not read cancel requests.", exc_info=True)
            return
        if not requests:
            self._acted.clear()
            return
        pids = self._worker_pids()
        for request in requests:
            try:
                self._act(request, pids)
            except Exception:
                logger.exception("Could not cancel task %s.", request.task_id)
        try:
            cancels.forget_settled(self.huey)
        except Exception:
            logger.debug("Could not clear settled cancel requests.", exc_info=True)

    def _worker_pids(self):
        if self.board is None:
            return {}
        return {p.pid: p for _, p in self.consumer.worker_threads if p.pid}

    def _act(self, request, pids):
        if request.host != cancels_host() or request.pid is None:
            return
        acted = self._acted.get(request.task_id)
        if request.pid == os.getpid() and self.board is None:
            running = control.running(request.task_id)
            if running is None:
                return
            if acted is None:
                self._cancel_thread(running, request.reason)
                self._acted[request.task_id] = (time.monotonic(), None)
            elif time.monotonic() - acted[0] > self.grace * 4:
                # Still running: the task caught the exception (a broad
                # except) and went on. Raised again, as often as it takes.
                self._acted[request.task_id] = (time.monotonic(), None)
                self._force_thread(running, request.reason, 0)
        elif request.pid in pids:
            if acted is None:
                self.board.post(request.task_id, request.reason)
                logger.info("Canceling task %s in worker process %s.",
                            request.task_id, request.pid)
                os.kill(request.pid, signal.SIGUSR1)
                self._acted[request.task_id] = (time.monotonic(), request.pid)
            elif time.monotonic() - acted[0] > self.grace * 3:
                self._kill(pids[request.pid], request)

    def _kill(self, proc, request):
        # The worker did not let go (a C call that ignores signals, a
        # handler of its own): it goes, the health check starts another,
        # and the outcome its worker could not write is written here.
        from hueyscope.queue import cancels

        if not proc.is_alive():
            return
        logger.warning("Worker process %s did not stop canceled task %s; "
                       "killing it (the health check starts another).",
                       request.pid, request.task_id)
        proc.kill()
        proc.join(5)
        if not proc.is_alive():
            cancels.settle_killed(self.huey, request,
                                  control.TaskCanceled(request.reason))

    def _cancel_thread(self, running, reason):
        logger.info("Canceling task %s (%s).", running.task.id, reason)
        running.cancel(reason)
        # Stopped at its next bytecode after the grace period, unless it
        # stopped by itself before (its end cancels the deadline).
        self._force_thread(running, reason, self.grace)

    def _force_thread(self, running, reason, delay):
        in_flight = self.huey._tasks_in_flight
        task = running.task
        deadline = self.watchdog.at(
            time.monotonic() + delay, running.thread_id,
            _exception(control.TaskCanceled, reason),
            guard=lambda: task in in_flight)
        running.cancel_deadline = deadline


def cancels_host():
    from hueyscope.queue import liveness

    return liveness.host_identity()
