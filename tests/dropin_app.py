"""An app written as huey's documentation writes one, on hueyscope's SqliteHuey.

The one-line change (``from hueyscope import SqliteHuey``) and nothing
else of hueyscope's, except ``attach`` when ``EVENTS`` is set: a signal
handler in huey's documented form, a ``lock_task``, tasks returning None.
Every start, finish and signal goes to the ledger file ``LEDGER`` (one
O_APPEND write a line). A task that finds ``HOLD`` naming a file waits
until that file exists.
"""
import os
import time

from huey import crontab

import hueyscope
import ledger_lines
from hueyscope import SqliteHuey

huey = SqliteHuey("dropin", filename=os.environ["QUEUE"])
if os.environ.get("EVENTS"):
    hueyscope.attach(huey, events=os.environ["EVENTS"])
LEDGER = os.environ.get("LEDGER", "ledger.txt")


def note(*words):
    ledger_lines.append(LEDGER, " ".join(str(w) for w in words))


def lines(path=None):
    return ledger_lines.read(path or LEDGER)


@huey.signal()
def log_signal(signal, task, exc=None):
    # huey's documented handler signature: no other keyword argument.
    note("signal", signal, task.id)


def hold():
    """Wait for the file HOLD names, if it names one."""
    path = os.environ.get("HOLD")
    while path and not os.path.exists(path):
        time.sleep(0.02)


@huey.task(context=True)
def job(n, task=None):
    """Returns None, so no result is stored: nothing else writes after it."""
    note("start", task.id, n, os.getpid())
    hold()
    note("done", task.id, n, os.getpid())


@huey.task(context=True, retries=50, retry_delay=0.2)
@huey.lock_task("sync")
def locked(n, task=None):
    """One at a time; a job that finds the lock taken is retried."""
    note("start", task.id, n, os.getpid())
    hold()
    note("done", task.id, n, os.getpid())
    return n


@huey.periodic_task(crontab(minute="*"))
def every_minute():
    note("tick")


@huey.task(context=True, retries=1, priority=100)
def urgent(task=None):
    """Fails on its first attempt; its retry must come before lower priorities."""
    marker = LEDGER + ".urgent"
    note("start", task.id, "urgent", os.getpid())
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ValueError("first attempt")
    note("done", task.id, "urgent", os.getpid())
