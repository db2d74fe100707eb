"""Chores: what a consumer does every so often besides running tasks.

Rebuilding the report (``--report-every``), pruning the event store
(``--retention``) and checking alert rules (``--check-every``) each run
as a :class:`Chore`: a function called on a timer in a daemon thread of its
own, so a slow prune never delays an alert check. The consumer starts them
before it runs and stops them after; a chore never raises into it.
"""
import logging
import threading

logger = logging.getLogger("hueyscope.consumer")


class Chore:
    """Call ``fn()`` every ``every`` seconds in a thread, until :meth:`stop`.

    The first call comes ``first_at`` seconds after :meth:`start` (default:
    one interval; 0: at once). ``fn`` is meant to handle and log its own
    failures; whatever it raises all the same is counted in ``failures`` and
    logged -- one line a failure, so at most one an interval -- and the
    chore carries on at the next interval. ``runs`` counts the calls that
    returned.
    """

    def __init__(self, name, every, fn, first_at=None):
        self.name = name
        self.every = float(every)
        self.fn = fn
        self.first_at = self.every if first_at is None else float(first_at)
        self.runs = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="hueyscope-" + name, daemon=True)

    def start(self):
        self._thread.start()

    def stop(self, timeout=10.0):
        """Stop the thread (a call under way finishes first); True if it
        stopped within ``timeout`` seconds, or never started."""
        self._stop.set()
        if self._thread.ident is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def run(self):
        """Call ``fn`` once; its result, or None if it raised. Never raises."""
        try:
            result = self.fn()
        except Exception as exc:
            self.failures += 1
            logger.warning("%s failed, retrying in %ss: %s: %s", self.name,
                           self.every, type(exc).__name__, exc)
            return None
        self.runs += 1
        return result

    def _loop(self):
        delay = self.first_at
        while not self._stop.wait(delay):
            self.run()
            delay = self.every
