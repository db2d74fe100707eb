"""The app of the control tests: tasks that spin, report progress and log.

``spin`` is a pure-Python loop that never checks for a cancel: only the
consumer's forced stop ends it early. The queue and event store come from
``HUEYSCOPE_QUEUE`` and ``HUEYSCOPE_EVENTS``.
"""
import logging
import os
import time

import hueyscope
from hueyscope.queue import make_huey
from hueyscope.settings import Settings

huey = make_huey(Settings.build(), name="control")
hueyscope.attach(huey)
logger = logging.getLogger("control_app")


def _spin(seconds):
    # Pure Python: no C call to wait in, nothing that looks for a cancel.
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
    return n


@huey.task()
def spin(seconds=30.0):
    return _spin(seconds)


@huey.task(timeout=1)
def spin_limited(seconds=30.0):
    return _spin(seconds)


@huey.task()
def polite(seconds=30.0):
    """Waits through hueyscope: a cancel ends it at once."""
    hueyscope.sleep(seconds)


@huey.task()
def steps(n=5, pause=0.3):
    """Reports progress and logs a line per step."""
    for i in range(n):
        logger.info("step %d of %d password=hunter2", i + 1, n)
        hueyscope.progress((i + 1) / n, "step %d" % (i + 1))
        time.sleep(pause)
    logger.debug("not kept: below INFO")
    return n


@huey.task()
def half_way(release):
    """Reports half done, then waits until the file ``release`` exists."""
    hueyscope.progress(0.5, "half way")
    logger.warning("waiting for %s", release)
    while not os.path.exists(release):
        hueyscope.sleep(0.05)
    hueyscope.progress(1.0, "done")


@huey.task()
def chatty(n=300):
    """Logs more lines than a run keeps."""
    for i in range(n):
        logger.info("line %d", i)


@huey.task()
@huey.lock_task("control-lock")
def locked_spin(seconds=30.0):
    return _spin(seconds)


@huey.task()
def stubborn(seconds=30.0):
    """Swallows every exception once: the first forced stop is caught."""
    caught = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            _spin(0.05)
        except Exception:
            caught += 1
            if caught > 1:
                raise
    return caught


@huey.task(timeout=1, retries=1, retry_delay=0)
def spin_retried(seconds=30.0):
    return _spin(seconds)


@huey.task()
def deaf(seconds=30.0):
    """Ignores the worker's SIGUSR1: only a kill stops it."""
    import signal

    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    return _spin(seconds)
