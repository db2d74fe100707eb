"""The chaos soak's app: a mix of tasks that each write a ledger line per step.

Every line is one O_APPEND write (``kind task_id label pid time``), so lines
from many processes never mix and a SIGKILL leaves whole lines. Kinds:

- ``enqueued``: written by a producer for every task id it enqueued (both
  steps of a pipeline);
- ``start`` / ``done``: a task body began / returned;
- ``fail``: a body raised on purpose (``flaky``'s first attempt).

The queue, event store and ledger come from ``HUEYSCOPE_QUEUE``,
``HUEYSCOPE_EVENTS`` and ``LEDGER``.
"""
import os
import random
import signal
import time

from huey import crontab
from huey import signals

import hueyscope
import ledger_lines
from hueyscope.queue import make_huey
from hueyscope.settings import Settings

huey = make_huey(Settings.build(), name="chaos")
hueyscope.attach(huey)
LEDGER = os.environ.get("LEDGER", "ledger.txt")
LOCK = "chaos-lock"
# flaky fails while it has this many retries left: on its first attempt.
FLAKY_RETRIES = 2


def note(kind, task_id, label):
    ledger_lines.append(LEDGER, "%s %s %s %d %.6f" % (kind, task_id, label,
                                                       os.getpid(), time.time()))


@huey.task(context=True)
def plain(n, seconds=0.0, task=None):
    """Note the start, sleep, note the finish."""
    note("start", task.id, "plain")
    time.sleep(seconds)
    note("done", task.id, "plain")
    return n


@huey.task(retries=FLAKY_RETRIES, retry_delay=0.3, context=True)
def flaky(n, task=None):
    """Fail on the first attempt (retried through the schedule), then succeed."""
    note("start", task.id, "flaky")
    if task.retries == FLAKY_RETRIES:
        note("fail", task.id, "flaky")
        raise RuntimeError("flaky fails its first attempt")
    note("done", task.id, "flaky")
    return n


@huey.task(context=True)
def step1(n, task=None):
    """A pipeline's first step: its value is the second step's argument."""
    note("start", task.id, "step1")
    time.sleep(0.02)
    note("done", task.id, "step1")
    return n * 2


@huey.signal(signals.SIGNAL_COMPLETE)
def slow_handler(sig, task, *args):
    """A user's signal handler that takes its time (a log shipped, a row
    written): a pipeline's first step is complete, its result stored, and
    its next step not yet enqueued for that long. A kill then lands there
    often enough to tell whether the record survives it.

    With ``CHAOS_DIE_AFTER_STEP1`` set, the consumer's whole process group
    is SIGKILLed right there instead, every time.
    """
    if task.name.endswith("step1"):
        if os.environ.get("CHAOS_DIE_AFTER_STEP1"):
            os.killpg(os.getpgid(0), signal.SIGKILL)
        time.sleep(0.05)


@huey.task(context=True)
def step2(value, task=None):
    note("start", task.id, "step2")
    note("done", task.id, "step2")
    return value + 1


# A lock held by another worker is 'locked' and retried: the retries are a
# budget of minutes, so the task finishes once the lock is free (a killed
# holder's lock is freed by recovery).
@huey.task(retries=2000, retry_delay=0.1, context=True)
@huey.lock_task(LOCK)
def locked(n, seconds=0.0, task=None):
    """At most one body runs at a time, across every consumer."""
    note("start", task.id, "locked")
    time.sleep(seconds)
    note("done", task.id, "locked")
    return n


@huey.periodic_task(crontab(minute="*"), context=True)
def every_minute(task=None):
    """Due at every minute; enqueued by one consumer per tick."""
    note("start", task.id, "periodic")
    note("done", task.id, "periodic")


def produce(seed, count):
    """Enqueue ``count`` tasks, a seeded mix, in small batches spread over time.

    Each batch is followed by a short pause so that enqueues go on while
    the consumers are killed and restarted.
    """
    rng = random.Random(seed)
    made = 0
    while made < count:
        for _ in range(min(10, count - made)):
            roll = rng.random()
            if roll < 0.55:
                ids = [(plain(made, rng.uniform(0.1, 0.8)).id, "plain")]
            elif roll < 0.70:
                ids = [(flaky(made).id, "flaky")]
            elif roll < 0.85:
                # Iterated: indexing a ResultGroup blocks for the result.
                first, second = huey.enqueue(step1.s(made).then(step2))
                ids = [(first.id, "step1"), (second.id, "step2")]
            else:
                ids = [(locked(made, rng.uniform(0.01, 0.08)).id, "locked")]
            for task_id, label in ids:
                note("enqueued", task_id, label)
            made += 1
        time.sleep(rng.uniform(0.5, 1.2))
    return made


def ledger(path=LEDGER):
    """[(kind, task id, label, pid, time)] in the order written."""
    rows = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 5:
                    rows.append((parts[0], parts[1], parts[2], int(parts[3]),
                                 float(parts[4])))
    except FileNotFoundError:
        pass
    return rows
