"""The demo catalogue: one task for every behaviour hueyscope records.

Import the instance by path, the huey way::

    hueyscope consume --app hueyscope.demo_tasks:huey

The queue and the event store come from the settings (``HUEYSCOPE_QUEUE``,
``HUEYSCOPE_EVENTS``), read once at import time; commands export their flags
to the environment before importing this module.

Priorities run from 0 to 100 and higher runs first: an unreliable external
call (100) goes before a CPU job (60), which goes before quick arithmetic
(50), which goes before slow batch I/O (10).
"""
import datetime
import random
import time

from huey import crontab

import hueyscope
from hueyscope.queue import make_huey
from hueyscope.settings import Settings

huey = make_huey(Settings.build())
recorder = hueyscope.attach(huey)

# The lock shared by every locked_sync_job: at most one runs at a time.
SYNC_LOCK = "demo:daily-sync"
# Seconds between two sub-minute heartbeats.
HEARTBEAT_EVERY = 10
FLAKY_RETRIES = 3


def _utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


@huey.task(priority=50)
def quick_add(a, b):
    """Add two numbers: the smallest possible task."""
    return a + b


@huey.task(priority=10)
def slow_io(seconds=1.0):
    """Stand in for slow I/O (a download, a report query) by sleeping."""
    time.sleep(seconds)
    return "slept=%s" % seconds


@huey.task(retries=FLAKY_RETRIES, retry_delay=1, priority=100, context=True)
def flaky_network_call(p_fail=0.6, fail_times=None, task=None):
    """A call to an unreliable service, retried up to 3 times, 1 s apart.

    With ``fail_times=N`` the first N attempts fail and the rest succeed, so
    tests and the demo know exactly how many retries to expect; otherwise
    each attempt fails with probability ``p_fail``.
    """
    attempt = FLAKY_RETRIES - task.retries + 1
    if fail_times is not None:
        failed = attempt <= fail_times
    else:
        failed = random.random() < p_fail
    if failed:
        raise RuntimeError("transient failure (attempt %d)" % attempt)
    return {"status": "OK", "attempt": attempt}


@huey.task(priority=60, context=True)
def cpu_pi_estimate(samples=200_000, seed=None, task=None):
    """Estimate pi by Monte Carlo; the result names the task that computed it."""
    rng = random.Random(seed)
    inside = sum(
        1 for _ in range(samples) if rng.random() ** 2 + rng.random() ** 2 <= 1.0)
    return {"task_id": task.id, "pi_estimate": 4.0 * inside / samples,
            "samples": samples}


# A job that must never run twice at once (a nightly sync, say). A second copy
# that finds the lock taken raises TaskLockedException, which huey reports as
# the "locked" signal and retries like any error, so every copy runs in turn.
@huey.task(retries=10, retry_delay=1)
@huey.lock_task(SYNC_LOCK)
def locked_sync_job(tag="sync", seconds=1.0):
    """Hold the sync lock for ``seconds``; returns when it started and ended."""
    started = _utcnow()
    time.sleep(seconds)
    return {"tag": tag, "started": started.isoformat(),
            "finished": _utcnow().isoformat()}


# The fetch -> transform -> store pipeline: each step's return value is
# passed as the first argument of the next, e.g.
#   huey.enqueue(fetch.s(7).then(transform, 3).then(store))
@huey.task()
def fetch(seed):
    """Extract: a real pipeline would download something keyed by ``seed``."""
    return seed


@huey.task()
def transform(value, scale):
    """Transform: scale the fetched value."""
    return value * scale


@huey.task()
def store(value):
    """Load: a real pipeline would write ``value`` somewhere."""
    return {"stored": value}


def pipeline(seed=7, scale=3):
    """The pipeline as one signature chain, ready for ``huey.enqueue``."""
    return fetch.s(seed).then(transform, scale).then(store)


# Heartbeats. The crontab heartbeat runs every minute. The sub-minute one is
# fanned out from it: each minutely beat schedules the ticks for the rest of
# its minute (+10 s, +20 s, ... +50 s). huey's scheduler then runs them, so
# nothing has to run a timer thread (least of all the producer), the ticks
# stay aligned to the minutely beat, and a consumer that stops simply leaves
# its ticks in the schedule, where they expire instead of running late.
@huey.periodic_task(crontab(minute="*"))
def heartbeat_minutely():
    """Every minute: beat, and schedule the sub-minute ticks of this minute."""
    now = _utcnow()
    for delay in range(HEARTBEAT_EVERY, 60, HEARTBEAT_EVERY):
        # An absolute expiry: huey resolves a relative one again when the
        # scheduler moves the task to the queue, so it would never expire.
        expires = now + datetime.timedelta(seconds=delay + HEARTBEAT_EVERY)
        heartbeat_tick.schedule(delay=delay, expires=expires)


@huey.task(priority=90)
def heartbeat_tick():
    """A sub-minute heartbeat (every HEARTBEAT_EVERY seconds).

    Returns nothing, so no result piles up in the queue's result store.
    """
