"""The consumer's parts: workers that count what they take, a scheduler, worker processes.

:class:`Worker` and :class:`Scheduler` are huey's, with the in-flight count
and the order tasks were taken in that the consumer samples; worker
processes run in a :class:`GracefulProcessEnvironment`, which leaves every
stop decision to the parent (see :mod:`hueyscope.consumer.runner`).
"""
import collections
import ctypes
import ctypes.util
import logging
import os
import signal
import threading
import time

from huey import consumer as huey_consumer

from hueyscope import control
from hueyscope.consumer.control import CancelBoard, interrupt_handler

logger = logging.getLogger("hueyscope.consumer")

GRACEFUL_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# huey's graceful restart (``systemctl reload``): stop gracefully, then the
# command starts the consumer again in the same process (see consume).
RESTART_SIGNAL = getattr(signal, "SIGHUP", None)
# What the parent sends a worker process to interrupt its task.
INTERRUPT_SIGNAL = signal.SIGUSR1
# Seconds to wait for interrupted worker processes before killing them.
INTERRUPT_GRACE = 3.0
PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid):
    """Have the kernel SIGKILL this process when its parent dies (Linux).

    A worker process outliving its consumer would go on taking tasks with
    no one to stop it (it ignores SIGINT and SIGTERM, see below). Killed,
    its lease goes back on the queue at the next recovery. Where prctl is
    missing, only the check below (a parent already gone) applies.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6",
                           use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    # The parent may have died before the request took effect.
    if os.getppid() != parent_pid:
        os._exit(1)


class _Counter:
    """The part of multiprocessing.Value that Worker uses, for threads."""

    def __init__(self):
        self.value = 0
        self._lock = threading.Lock()

    def get_lock(self):
        return self._lock


class TakenLog:
    """The tasks thread workers took off the queue, in the exact order taken.

    Which worker's 'executing' signal comes first says little when several
    workers dequeue within milliseconds: one may wait on SQLite for its
    revocation check while the next runs ahead. Dequeues are serialised by
    the queue anyway (SQLite takes an exclusive lock for each), so holding a
    Python lock across dequeue-and-note costs nothing and gives the true
    order: what a priority queue promises. Keeps the last ``size`` entries.
    """

    def __init__(self, size=1000):
        self.lock = threading.Lock()
        self.entries = collections.deque(maxlen=size)
        self.count = 0

    def note(self, task, seq=None):
        self.count += 1
        self.entries.append((seq or self.count, time.time(), task.id, task.name,
                             task.priority))

    def in_order(self):
        """The entries by the order they were taken."""
        return sorted(list(self.entries))


class Worker(huey_consumer.Worker):
    """huey's worker, counting the task it is running in a shared counter.

    Each task it runs is registered (:mod:`hueyscope.control`) while it
    runs, so that it can be canceled, report progress and keep its log
    lines; a task without a ``timeout=`` gets ``default_timeout``.
    """

    def __init__(self, huey, stop_flag, default_delay, max_delay, backoff,
                 max_tasks=None, in_flight=None, taken=None,
                 default_timeout=None, watchdog=None):
        super().__init__(huey, stop_flag, default_delay, max_delay, backoff,
                         max_tasks=max_tasks)
        self.in_flight = in_flight
        # Seconds a task without its own timeout= may run (None: no limit).
        self.default_timeout = default_timeout
        self.watchdog = watchdog
        # A blocking storage waits inside dequeue(): never under a lock. A
        # leased one numbers what it hands out itself, under its own lock.
        self.taken = taken if getattr(huey.storage, "leased", False) or \
            not huey.storage.blocking else None

    def dequeue(self):
        if self.taken is None:
            return self.huey.dequeue()
        if getattr(self.huey.storage, "leased", False):
            # A leased storage numbers what it hands out under its own lock,
            # and serves waiting workers in one transaction: a lock here
            # would leave it one worker to serve.
            task = self.huey.dequeue()
            if task is not None:
                self.taken.note(task, self.huey.storage.taken_seq())
            return task
        with self.taken.lock:
            task = self.huey.dequeue()
            if task is not None:
                self.taken.note(task)
            return task

    def loop(self, now=None):
        # huey's Worker.loop, with the in-flight count around execute().
        try:
            task = self.dequeue()
        except Exception:
            self._logger.exception("Error reading from queue")
            self.sleep()
            return
        if task is None:
            if not self.huey.storage.blocking:
                self.sleep()
            return
        self.delay = self.default_delay
        self.task_count += 1
        self._add_in_flight(1)
        if self.default_timeout and not task.timeout:
            task.timeout = self.default_timeout
        running = control.begin(task, self.huey)
        try:
            self.huey.execute(task, now)
        except Exception:
            self._logger.exception("Unhandled error during execution of "
                                   "task %s.", task.id)
        finally:
            self._done(running)
            self._add_in_flight(-1)
        if self.max_tasks and self.task_count >= self.max_tasks:
            self._logger.info("Worker reached max tasks (%d), exiting.",
                              self.max_tasks)
            raise huey_consumer.WorkerRecycle()

    def _done(self, running):
        # A forced stop not yet delivered is taken back: the task ended.
        if running.cancel_deadline is not None and self.watchdog is not None:
            self.watchdog.cancel(running.cancel_deadline)
        if running.progress_due is not None:
            control.flush_progress(running)
        if running.logs:
            from hueyscope.events import task_logs

            task_logs.finish(running)
        control.end(running)

    def _add_in_flight(self, n):
        if self.in_flight is not None:
            with self.in_flight.get_lock():
                self.in_flight.value += n


class Scheduler(huey_consumer.Scheduler):
    """huey's scheduler; flushes the recorder when its process ends.

    The scheduler enqueues delayed and periodic tasks, so it records
    'enqueued' events; as a worker process of its own it must flush them
    before exiting, as huey's shutdown hooks only run in workers.
    """

    def shutdown(self):
        from hueyscope.events.recorder import recorder_for

        recorder = recorder_for(self.huey)
        if recorder is not None:
            recorder.flush(timeout=10.0)


class GracefulProcessEnvironment(huey_consumer.ProcessEnvironment):
    """Worker processes that leave every stop decision to their parent.

    huey's ProcessEnvironment ignores the graceful signal in children and
    interrupts them with the other one, so with both SIGINT and SIGTERM
    graceful there is no signal left to interrupt with: children ignore both
    (and SIGHUP) and are interrupted with SIGUSR1. If a child is busy with
    no task (so it ignores SIGUSR1) and does not exit, it is killed after a
    grace period, since multiprocessing's exit handler would otherwise wait
    for it forever (its SIGTERM is ignored).
    """

    def init_child(self, process):
        die_with_parent(self.parent_pid)
        from hueyscope.events import task_logs

        task_logs.in_worker_process()  # its lines are its task's
        # SIGUSR1 stops the task: canceled if the board says so (see
        # hueyscope.consumer.control), else interrupted.
        interrupt = interrupt_handler(process, self.board)
        for signum in GRACEFUL_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(INTERRUPT_SIGNAL, interrupt)

    def __init__(self, *args):
        super().__init__(*args)
        self.parent_pid = os.getpid()
        self.board = CancelBoard()  # shared with the workers it forks

    def interrupt_workers(self, procs):
        for proc in procs:
            if proc.is_alive():
                try:
                    os.kill(proc.pid, INTERRUPT_SIGNAL)
                except OSError:
                    pass
        deadline = time.monotonic() + INTERRUPT_GRACE
        for proc in procs:
            proc.join(max(deadline - time.monotonic(), 0))
        for proc in procs:
            if proc.is_alive():
                logger.warning("Worker process %s did not stop, killing it.",
                               proc.pid)
                proc.kill()
                proc.join(1)
