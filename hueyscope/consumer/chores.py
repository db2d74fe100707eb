"""Chores: what a consumer does every so often besides running tasks.

Rebuilding the report (``--report-every``), pruning the event store
(``--retention``) and checking alert rules (``--check-every``) each run
as a :class:`Chore`: a function called on a timer in a daemon thread of its
own, so a slow prune never delays an alert check. The consumer starts them
before it runs and stops them after; a chore never raises into it.

Each chore does its work in a child process (:func:`in_child`), and the
thread only waits for it. A consumer with process workers forks a worker
whenever its health check finds one dead; a fork while another thread of
the consumer is inside SQLite copies SQLite's mutexes locked, and the new
worker hangs at its first query. So no thread of the consumer but the one
that forks touches SQLite: the chores read and write the event store from
processes of their own.
"""
import json
import logging
import subprocess
import sys
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


class ChildFailed(Exception):
    """A chore's child process failed; the message is its last line."""


def in_child(code, *args, timeout=3600):
    """Run ``code`` (Python source) in a child process, ``args`` as its
    ``sys.argv[1:]``; the JSON value of its last line of output.

    Raises :class:`ChildFailed` with the last line the child wrote to
    stderr (a traceback's last line names the exception), and
    subprocess.TimeoutExpired (the child killed) after ``timeout`` seconds.
    """
    proc = subprocess.run([sys.executable, "-c", code] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        errors = proc.stderr.strip().splitlines() or [
            "exit %d, no answer" % proc.returncode]
        raise ChildFailed(errors[-1])
    return json.loads(lines[-1])


def failure_line(exc):
    """``exc`` as one log line; a child's own last line says what it was."""
    if isinstance(exc, ChildFailed):
        return str(exc)
    return "%s: %s" % (type(exc).__name__, exc)
