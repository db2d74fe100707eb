"""A test app whose tasks write a ledger: one line per start and per finish.

Each line is one O_APPEND write, so lines from many processes never mix and
a SIGKILL leaves whole lines. The fault tests read it to tell which tasks
ran, how often and where. The queue, event store and ledger come from
``HUEYSCOPE_QUEUE``, ``HUEYSCOPE_EVENTS`` and ``LEDGER``.
"""
import os
import signal
import time

import hueyscope
import ledger_lines
from hueyscope.queue import make_huey
from hueyscope.settings import Settings

huey = make_huey(Settings.build(), name="ledger")
hueyscope.attach(huey)
LEDGER = os.environ.get("LEDGER", "ledger.txt")


def note(*words):
    ledger_lines.append(LEDGER, " ".join(str(w) for w in words))


@huey.task(context=True)
def work(n, seconds=0.0, task=None):
    """Note the start, sleep, note the finish, return ``n``."""
    note("start", task.id, n, os.getpid())
    if seconds:
        time.sleep(seconds)
    note("done", task.id, n, os.getpid())
    return n


@huey.task(context=True, unique=True)
def unique_work(n, task=None):
    """``work`` as a unique task: one of each ``n`` waiting or running."""
    note("start", task.id, n, os.getpid())
    note("done", task.id, n, os.getpid())
    return n


@huey.task(context=True, concurrency=2)
def capped(n, seconds=0.0, task=None):
    """``work``, at most two running at a time across every consumer."""
    note("start", task.id, n, os.getpid())
    if seconds:
        time.sleep(seconds)
    note("done", task.id, n, os.getpid())
    return n


@huey.task(context=True)
def kill_own_worker(task=None):
    """A poison task: SIGKILL the process that runs it."""
    note("start", task.id, "poison", os.getpid())
    os.kill(os.getpid(), signal.SIGKILL)


@huey.task(context=True)
@huey.lock_task("exclusive")
def locked(n, seconds=0.0, task=None):
    """At most one runs at a time, across consumers; sleeps on its first run only."""
    again = task.id in starts()
    note("start", task.id, n, os.getpid())
    if not again:
        time.sleep(seconds)
    note("done", task.id, n, os.getpid())
    return n


if os.environ.get("LEDGER_PERIODIC"):
    from huey import crontab

    @huey.periodic_task(crontab(minute="*"))
    def every_minute():
        """Due as the consumer starts, then every minute."""
        note("periodic", "-", 0, os.getpid())


if os.environ.get("LEDGER_EXTRA_TASK"):
    @huey.task()
    def only_in_the_producer():
        """Deployed to the producer and not to the consumer."""


def ledger(path=LEDGER):
    """[(kind, task id, n, pid)] in the order written."""
    return ledger_lines.read(path)


def starts(path=LEDGER):
    """{task id: number of starts}."""
    counts = {}
    for kind, task_id, *_ in ledger(path):
        if kind == "start":
            counts[task_id] = counts.get(task_id, 0) + 1
    return counts


def enqueue(count, seconds=0.0):
    """Enqueue ``count`` work tasks; their ids in order."""
    return [work(i, seconds).id for i in range(count)]
