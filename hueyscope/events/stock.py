"""huey's own consumer (huey_consumer, Django's run_huey), recorded like ours.

hueyscope's consumer tells the recorder what it is: its ``runs`` row has
the worker count and type, a queue sample goes with every heartbeat, and
the stop reason says how it stopped. huey's consumer tells nobody; but it
is built by ``Huey.create_consumer``, which huey_consumer and djhuey's
run_huey both call. :func:`install` wraps that method of the instance, and
a consumer built there is watched:

- its run begins as it starts, before any worker forks (so worker
  processes record under it), with its workers, worker type and periodic
  flag;
- a thread of the consumer's process samples the queue every few seconds;
- its stop is recorded as huey's consumer decided it: ``graceful`` when
  every worker finished (the graceful signal, SIGINT by default),
  ``shutdown-timeout`` when ``-s/--shutdown-timeout`` ran out first,
  ``interrupted`` when tasks in flight were stopped (the other signal, or
  a second one), ``restart`` on SIGHUP, ``error`` when its loop raised.

Nothing here changes what the consumer does, and nothing raises into it.
"""
import logging
import threading

logger = logging.getLogger("hueyscope.recorder")

SAMPLE_INTERVAL = 2.0  # seconds between queue samples, as `consume` defaults


def install(huey, recorder):
    """Watch every consumer ``huey.create_consumer`` builds from now on."""
    create = huey.create_consumer

    def create_consumer(**options):
        consumer = create(**options)
        # hueyscope's own consumer drives the recorder itself.
        if getattr(consumer, "recorder", None) is None:
            try:
                _Watch(consumer, recorder)
            except Exception:
                logger.exception("hueyscope recorder: cannot watch this "
                                 "consumer; its run is recorded without its "
                                 "workers and stop reason")
        return consumer

    huey.create_consumer = create_consumer


class _Watch:
    """Wraps start, stop, run and _join_workers of one huey Consumer."""

    def __init__(self, consumer, recorder):
        self.consumer = consumer
        self.recorder = recorder
        self.reason = None
        self._start, self._stop = consumer.start, consumer.stop
        self._run, self._join = consumer.run, consumer._join_workers
        consumer.start, consumer.stop = self.start, self.stop
        consumer.run, consumer._join_workers = self.run, self.join_workers

    def start(self):
        consumer = self.consumer
        try:
            self.recorder.begin_run(
                role="consumer", workers=consumer.workers,
                worker_type=consumer.worker_type, periodic=consumer.periodic)
        except Exception:
            logger.exception("hueyscope recorder: could not record the start "
                             "of this run")
        self._start()
        # After the workers forked: the sampler's queue connection is this
        # process's alone.
        threading.Thread(target=self._sample, name="hueyscope-sampler",
                         daemon=True).start()

    def _sample(self):
        huey = self.consumer.huey
        while True:
            try:
                self.recorder.heartbeat(pending=huey.pending_count(),
                                        scheduled=huey.scheduled_count())
            except Exception as exc:  # a busy queue: the next one will do
                logger.debug("hueyscope recorder: no queue sample: %s", exc)
            if self.consumer.stop_flag.wait(SAMPLE_INTERVAL):
                return

    def stop(self, graceful=False):
        # join_workers says "graceful" or "shutdown-timeout"; a second
        # signal while it waits (KeyboardInterrupt) leaves "interrupted".
        self.reason = "interrupted"
        try:
            return self._stop(graceful)
        finally:
            if getattr(self.consumer, "_restart", False):
                # run() replaces the process (os.execl) without returning.
                self.reason = "restart"
                self._end()

    def join_workers(self):
        finished = self._join()
        self.reason = "graceful" if finished else "shutdown-timeout"
        return finished

    def run(self):
        try:
            return self._run()
        finally:
            # After huey's notify_interrupted_tasks: those events go too.
            self._end()

    def _end(self):
        try:
            self.recorder.end_run(reason=self.reason or "error")
        except Exception:
            logger.exception("hueyscope recorder: could not record the end "
                             "of this run")
