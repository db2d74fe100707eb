"""huey's consumer, made safe to embed, graceful on every stop signal, recorded.

:class:`Consumer` is a subclass of :class:`huey.consumer.Consumer` that differs
in three ways:

1. It runs fully in any thread. huey 3.5.4 installs its signal handlers at
   the end of ``start()``, after the workers started; in a non-main thread
   ``signal.signal`` raises "signal only works in main thread", ``run()``
   dies there and the health checks and the interrupted-task notification
   never run, while the workers go on without supervision. This consumer
   installs signal handlers only in the main thread, and anything (another
   thread, a notebook cell, a test) can stop it with :meth:`request_stop`.

2. SIGINT and SIGTERM are both graceful: tasks in flight finish, then
   ``run()`` returns. A second signal (or ``request_stop(graceful=False)``)
   interrupts the tasks still running. Process workers ignore SIGINT and
   SIGTERM themselves, so the Ctrl-C a terminal sends to the whole process
   group does not kill a task mid-way; the parent interrupts them with
   SIGUSR1 when it decides to.

3. It drives the hueyscope recorder: a ``runs`` row at start, a heartbeat and
   a queue sample every few seconds, the stop reason and a full flush at the
   end.

4. On a leased queue (:mod:`hueyscope.queue.leases`) it recovers the work of dead
   consumers at start and at every health check, puts its own interrupted
   tasks back on the queue as it stops, and its worker processes die with
   it: a child whose parent is gone is killed by the kernel
   (PR_SET_PDEATHSIG), so none goes on taking tasks unsupervised.
"""
import logging
import multiprocessing
import os
import signal
import threading
import time

from huey import consumer as huey_consumer
from huey.constants import WORKER_PROCESS

from hueyscope.consumer.control import (CANCEL_GRACE, POLL_EVERY, Canceller,
                                        ControlledThreadEnvironment, Watchdog)
from hueyscope.consumer.workers import (GRACEFUL_SIGNALS, RESTART_SIGNAL,
                                        GracefulProcessEnvironment, Scheduler,
                                        TakenLog, Worker, _Counter)
from hueyscope.settings import DEFAULT_LEASE_TIMEOUT, DEFAULT_MAX_RECOVERIES

logger = logging.getLogger("hueyscope.consumer")

class Consumer(huey_consumer.Consumer):
    """A huey consumer that embeds anywhere, stops gracefully, and records.

    Takes huey's Consumer options plus:

    ``recorder``
        a :class:`hueyscope.events.recorder.Recorder` to drive (default: the
        one attached to ``huey``, if any).
    ``app``
        the ``module:attribute`` path recorded in the ``runs`` row.
    ``sample_interval``
        seconds between heartbeats (each with a queue sample), recorded by
        the supervising loop.
    ``lease_timeout``, ``max_recoveries``, ``keep_failed``
        recovery of a leased queue (see :func:`hueyscope.queue.recovery.recover`).
    ``default_timeout``
        seconds a task without a ``timeout=`` of its own may run; thread
        workers enforce time limits too (see :mod:`hueyscope.consumer.control`).
    ``cancel_grace``
        seconds a canceled task has to stop by itself before it is stopped.
    ``task_log_level``, ``task_log_limit``
        the log records kept with a running task's record: at or above this
        level (None: none kept), at most this many a run (see
        :mod:`hueyscope.events.task_logs`).

    Run it with :meth:`run` (blocks until stopped) in any thread; stop it
    with :meth:`request_stop` from any thread, or SIGINT / SIGTERM when it
    runs in the main thread.
    """

    worker_class = Worker
    scheduler_class = Scheduler

    def __init__(self, huey, recorder=None, app=None, sample_interval=2.0,
                 lease_timeout=None, max_recoveries=None,
                 keep_failed=None, default_timeout=None,
                 cancel_grace=CANCEL_GRACE, task_log_level=logging.INFO,
                 task_log_limit=200, **options):
        self.leased = getattr(huey.storage, "leased", False)
        self.default_timeout = default_timeout
        self.task_log_level = task_log_level
        self.task_log_limit = task_log_limit
        self._task_logs = None  # the handler, while the consumer runs
        # Raises time limits and forced cancels in worker threads; its
        # thread starts at the first one.
        self.watchdog = Watchdog()
        self.lease_timeout = lease_timeout or DEFAULT_LEASE_TIMEOUT
        self.keep_failed = keep_failed
        self.max_recoveries = DEFAULT_MAX_RECOVERIES \
            if max_recoveries is None else max_recoveries
        self._flush_lock_names = None  # set by huey's __init__ via flush_locks()
        self._reconcile_seen = {}  # task id -> first seen open with a result
        if self.leased:
            # Recovery runs here, with this consumer's settings, not from
            # the dequeue path as under huey's own consumers.
            huey.recover_on_dequeue = False
            # What is leased and never started goes back on the queue at
            # stop (_put_back_own_work), so a worker may lease its next task
            # in the transaction that stores its last result.
            huey.storage.prefetch = True
        # Counts tasks in flight across worker threads or processes.
        if options.get("worker_type") == WORKER_PROCESS:
            self.in_flight = multiprocessing.get_context("fork").Value("i", 0)
        else:
            self.in_flight = _Counter()
        # Thread workers only: forked processes would each keep their own.
        self.taken = TakenLog() if options.get("worker_type", "thread") == "thread" \
            else None
        super().__init__(huey, **options)
        if recorder is None:
            from hueyscope.events.recorder import recorder_for

            recorder = recorder_for(huey)
        self.recorder = recorder
        self.app = app
        self.sample_interval = float(sample_interval)
        # Cancel requests are looked for in the queue; a queue that leases
        # nothing says nothing of who runs what.
        self.canceller = Canceller(self, grace=cancel_grace)
        self.run_id = None
        self.stop_reason = None
        self.health_checks = 0
        self.started = threading.Event()
        self.stopped = threading.Event()
        self._request = None  # None, "graceful" or "now"
        self._request_signal = None
        self._wake = threading.Event()
        self._request_lock = threading.Lock()
        self._old_handlers = {}
        # Signal -> (restart, graceful): both stop signals are graceful.
        self._signal_actions = {signum: (False, True) for signum in GRACEFUL_SIGNALS}
        if RESTART_SIGNAL is not None:
            self._signal_actions[RESTART_SIGNAL] = (True, True)
        self.restart = False  # a restart signal stopped it: run it again

    # -- huey hooks -------------------------------------------------------

    def get_environment(self, worker_type):
        if worker_type == WORKER_PROCESS:
            return GracefulProcessEnvironment(*GRACEFUL_SIGNALS)
        if worker_type == "thread":
            return ControlledThreadEnvironment(
                self.watchdog, self._graceful_sig, self._interrupt_sig)
        return super().get_environment(worker_type)

    def _create_worker(self):
        return self.worker_class(
            huey=self.huey, stop_flag=self.stop_flag,
            default_delay=self.default_delay, max_delay=self.max_delay,
            backoff=self.backoff, max_tasks=self.max_tasks,
            in_flight=self.in_flight, taken=self.taken,
            default_timeout=self.default_timeout, watchdog=self.watchdog)

    def _set_signal_handlers(self):
        # Only the main thread may install signal handlers; embedded in any
        # other thread, request_stop() is the way to stop.
        if threading.current_thread() is not threading.main_thread():
            logger.debug("Not in the main thread: no signal handlers.")
            return
        if self._old_handlers:  # installed already, at the start of run()
            return
        for signum in self._signal_actions:
            self._old_handlers[signum] = signal.signal(signum, self._handle_signal)

    def _restore_signal_handlers(self):
        for signum, handler in self._old_handlers.items():
            try:
                signal.signal(signum, handler)
            except (TypeError, ValueError):
                pass
        self._old_handlers = {}

    def _handle_signal(self, signum, frame):
        # Runs in the main thread between two bytecodes: only plain
        # assignments here (no locks, which the interrupted code may hold).
        self._request_signal = signum
        self._request = "now" if self._request else "graceful"
        if signum == RESTART_SIGNAL:
            self.restart = True

    def flush_locks(self, *names):
        # huey frees stale locks in __init__; here it waits for run(), after
        # the signal handlers and the recovery of dead holders' locks.
        self._flush_lock_names = names

    # -- stopping ---------------------------------------------------------

    def request_stop(self, graceful=True):
        """Ask the consumer to stop; returns at once, from any thread.

        Graceful: tasks in flight finish first. ``graceful=False``, or a
        request made while a graceful stop is under way with
        ``graceful=False``, interrupts them.
        """
        with self._request_lock:
            if not graceful:
                self._request = "now"
            elif self._request is None:
                self._request = "graceful"
        self._wake.set()

    def wait_stopped(self, timeout=None):
        """Block until run() has returned; True if it has."""
        return self.stopped.wait(timeout)

    def stop(self, graceful=False):
        """Set the stop flag; if graceful, wait for the workers to finish.

        Returns the stop reason: "graceful" when every worker finished on its
        own, "shutdown-timeout" when shutdown_timeout elapsed first,
        or "interrupted" when the tasks in flight were interrupted (a stop
        that did not wait, or a second stop request during the wait).
        """
        self.stop_flag.set()
        reason = "interrupted"
        if graceful:
            logger.info("Shutting down gracefully...")
            reason = self._join_workers()
            if reason == "graceful":
                logger.info("All workers have stopped.")
                return reason
            if reason == "shutdown-timeout":
                logger.warning("Shutdown timeout of %ss elapsed, interrupting "
                               "workers.", self.shutdown_timeout)
            else:
                logger.info("Received request to shut down now.")
        self._interrupt_workers()
        logger.info("Shutting down")
        return reason

    def _join_workers(self):
        # Poll rather than block in join(), so that a second stop request
        # (a signal or request_stop) is noticed while we wait.
        deadline = None
        if self.shutdown_timeout is not None:
            deadline = time.monotonic() + self.shutdown_timeout
        procs = [p for _, p in self.worker_threads] + [self.scheduler]
        while any(self.environment.is_alive(p) for p in procs):
            if self._request == "now":
                return "interrupted"
            if deadline is not None and time.monotonic() >= deadline:
                return "shutdown-timeout"
            for proc in procs:
                if self.environment.is_alive(proc):
                    proc.join(0.05)
                    break
        return "graceful"

    # -- running ----------------------------------------------------------

    def run(self):
        """Start the workers and supervise them until a stop is requested."""
        # A stop signal during start-up (recovery, forking the workers) is
        # a stop request like any other, not the default handler's death.
        self._set_signal_handlers()
        # The run begins before the workers start, so that forked worker
        # processes record under it instead of starting runs of their own.
        self._begin_run()
        self.recover()
        if self._flush_lock_names is not None:
            super().flush_locks(*self._flush_lock_names)
        reason = "error"
        self._keep_task_logs(True)
        try:
            self.start()
            self.started.set()
            reason = self._supervise()
        finally:
            if reason == "error":
                # Something raised in the loop: stop without waiting.
                self.stop(graceful=False)
            self._keep_task_logs(False)
            self._restore_signal_handlers()
            self.huey.notify_interrupted_tasks()
            self._put_back_own_work()
            if self.restart and reason == "graceful":
                reason = "restart"
            self.stop_reason = reason
            self._end_run(reason)
            self.started.set()
            self.stopped.set()
        logger.info("Consumer exiting (%s).", reason)
        return reason

    def _keep_task_logs(self, on):
        # The handler is on the root logger while the consumer runs; forked
        # worker processes inherit it.
        from hueyscope.events import task_logs

        if on and self.recorder is not None and self.task_log_level is not None \
                and self._task_logs is None:
            self._task_logs = task_logs.install(self.task_log_level,
                                                self.task_log_limit)
        elif not on and self._task_logs is not None:
            task_logs.uninstall(self._task_logs)
            self._task_logs = None

    def _supervise(self):
        # Heartbeats and cancel requests are read here, in the thread that
        # forks worker processes, never in a thread of their own: a fork
        # while another thread is inside SQLite leaves the child's copy of
        # SQLite's mutexes locked for ever (the new worker hangs).
        now = time.monotonic()
        next_health = now + self._health_check_interval
        next_sample = next_cancels = now
        while True:
            self._wake.wait(self._stop_flag_timeout)
            self._wake.clear()
            if self._request is not None:
                if self._request_signal is not None:
                    logger.info("Received %s",
                                signal.Signals(self._request_signal).name)
                return self.stop(graceful=self._request == "graceful")
            now = time.monotonic()
            if self._health_check and now >= next_health:
                next_health = now + self._health_check_interval
                self.check_worker_health()
                self.recover()
                self._reconcile()
                self.health_checks += 1
            if now >= next_sample:
                next_sample = now + self.sample_interval
                self._heartbeat()
            if self.leased and now >= next_cancels:
                next_cancels = now + POLL_EVERY
                self.canceller.poll()

    # -- recovery -------------------------------------------------------------

    def recover(self, own_pids=()):
        """Put dead consumers' work back on the queue; never raises.

        ``own_pids``: this consumer's processes, whose leases go back too
        (interrupted at stop), without counting towards poison parking.
        """
        if not self.leased:
            return None
        from hueyscope.queue import recovery

        try:
            outcome = recovery.recover(
                self.huey, lease_timeout=self.lease_timeout,
                max_recoveries=self.max_recoveries, own_pids=own_pids,
                keep_failed=self.keep_failed)
        except Exception:
            logger.exception("Recovery failed; it runs again at the next "
                             "health check.")
            return None
        return outcome

    def _reconcile(self):
        # Results a killed consumer stored without its last events reaching
        # the store: record them complete (see hueyscope.events.reconcile).
        if self.recorder is None:
            return
        from hueyscope.events.reconcile import reconcile

        try:
            reconciled = reconcile(self.huey, self.recorder, self._reconcile_seen)
        except Exception:
            logger.exception("Could not reconcile the event store.")
            return
        if reconciled:
            logger.info("Recorded %d task(s) complete whose results were in "
                        "the queue but not in the event store.", reconciled)

    def _put_back_own_work(self):
        # Tasks interrupted by the stop, and tasks leased for workers that
        # never started them, go back on the queue now.
        if not self.leased:
            return
        try:
            self.huey.storage.put_back_unstarted()
            self.huey.storage.release_pending()
        except Exception:
            logger.exception("Could not put back the tasks taken ahead.")
        pids = {os.getpid()}
        if self.worker_type == WORKER_PROCESS:
            pids.update(p.pid for _, p in self.worker_threads if p.pid)
            if self.scheduler.pid:
                pids.add(self.scheduler.pid)
        self.recover(own_pids=pids)

    def queue_sample(self):
        """(pending, scheduled, in flight) right now."""
        return (self.huey.pending_count(), self.huey.scheduled_count(),
                self.in_flight.value)

    def _begin_run(self):
        if self.recorder is None:
            return
        try:
            self.run_id = self.recorder.begin_run(
                role="consumer", workers=self.workers,
                worker_type=self.worker_type, app=self.app,
                periodic=self.periodic)
        except Exception:
            logger.exception("Could not record the start of this run.")

    def _heartbeat(self):
        if self.recorder is None:
            return
        try:
            pending, scheduled, in_flight = self.queue_sample()
            self.recorder.heartbeat(pending=pending, scheduled=scheduled,
                                    in_flight=in_flight)
        except Exception:
            logger.exception("Could not record a heartbeat.")

    def _end_run(self, reason):
        if self.recorder is None:
            return
        try:
            self._heartbeat()
            if not self.recorder.end_run(reason=reason):
                logger.warning("Some events were not written before the "
                               "flush timed out.")
        except Exception:
            logger.exception("Could not record the end of this run.")
