"""A test app for the PostgreSQL fault tests: pipelines, a retried task, a ledger.

Like tests/ledger_app.py, each task writes one O_APPEND line per run to
``LEDGER``: ``<kind> <task id> <n> <pid>``, so a test reads which tasks
ran, in which order and how often. The queue and the event store come from
``HUEYSCOPE_QUEUE`` and ``HUEYSCOPE_EVENTS``; ``PG_FLUSH_INTERVAL`` sets the
recorder's flush interval (a long one keeps the last events in memory, for
the kill tests).
"""
import os

import hueyscope
import ledger_lines
from hueyscope.queue import make_huey
from hueyscope.settings import Settings

huey = make_huey(Settings.build(), name="pgfaults")
hueyscope.attach(huey, flush_interval=float(os.environ.get("PG_FLUSH_INTERVAL", "0.2")))
LEDGER = os.environ.get("LEDGER", "ledger.txt")
FAILED_ONCE = os.environ.get("PG_FAILED_ONCE", "failed-once.txt")


def note(*words):
    ledger_lines.append(LEDGER, " ".join(str(w) for w in words))


@huey.task(context=True)
def first_step(n, task=None):
    """Step 1 of a pipeline: its result is step 2's argument."""
    note("step1", task.id, n, os.getpid())
    return n


@huey.task(context=True)
def second_step(n, task=None):
    """Step 2 of a pipeline."""
    note("step2", task.id, n, os.getpid())
    return n


@huey.task(context=True)
def plain(n, task=None):
    """A task of the default priority (0)."""
    note("plain", task.id, n, os.getpid())
    return n


@huey.task(retries=1, priority=100, context=True)
def fails_once(task=None):
    """Urgent: fails its first run, succeeds when retried (no delay)."""
    first = not os.path.exists(FAILED_ONCE)
    note("urgent", task.id, "first" if first else "retry", os.getpid())
    if first:
        open(FAILED_ONCE, "w").close()
        raise ValueError("fails once")
    return "ok"


def pipelines(count):
    """Enqueue ``count`` two-step pipelines; the ids of their first steps."""
    return [list(huey.enqueue(first_step.s(i).then(second_step)))[0].id
            for i in range(count)]


def ledger(path=LEDGER):
    """[(kind, task id, n, pid)] in the order written."""
    return ledger_lines.read(path)
