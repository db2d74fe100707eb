"""A test app for what the record must get right in huey's edge cases.

Built the way a user builds theirs: hueyscope's leased ``SqliteHuey`` (huey's
own with ``TRUTH_STOCK=1``, hueyscope's at-most-once one with
``HUEYSCOPE_DELIVERY=at-most-once``), ``utc`` from ``TRUTH_UTC`` (``0``: naive
local times), the recorder attached. The queue and store come from
``HUEYSCOPE_QUEUE`` and ``HUEYSCOPE_EVENTS``; ``TRUTH_TIMEOUT`` sets the
queue's busy timeout (a producer that must fail fast on a locked queue).
"""
import os

from huey import crontab
from huey.api import SqliteHuey as StockSqliteHuey
from huey.exceptions import RetryTask

import hueyscope
from hueyscope.queue import DurableSqliteHuey

UTC = os.environ.get("TRUTH_UTC", "1") == "1"
TIMEOUT = float(os.environ.get("TRUTH_TIMEOUT", "5"))
if os.environ.get("TRUTH_STOCK"):
    _cls = StockSqliteHuey
elif os.environ.get("HUEYSCOPE_DELIVERY") == "at-most-once":
    _cls = DurableSqliteHuey
else:
    _cls = hueyscope.SqliteHuey
if "://" in os.environ["HUEYSCOPE_QUEUE"]:  # a server queue: as --queue builds it
    from hueyscope.queue import make_huey
    from hueyscope.settings import Settings

    huey = make_huey(Settings.build(), name="truth", utc=UTC)
else:
    huey = _cls("truth", filename=os.environ["HUEYSCOPE_QUEUE"], utc=UTC,
                timeout=TIMEOUT)
# TRUTH_FLUSH: seconds between the recorder's writes (a process that is to
# die with its events unwritten sets an hour).
hueyscope.attach(huey, os.environ["HUEYSCOPE_EVENTS"],
                 flush_interval=float(os.environ.get("TRUTH_FLUSH", "0.2")))
COUNTER = os.environ.get("TRUTH_COUNTER", "retries.txt")


@huey.task()
def add(a, b):
    return a + b


@huey.task()
def fetch(n):
    return n + 1


@huey.task()
def transform(n):
    return n * 2


@huey.task()
def store(n):
    return n


@huey.task()
def retry_twice():
    """Ask for a retry (RetryTask, 0.5 s later) twice, then return."""
    with open(COUNTER, "a+") as f:
        f.seek(0)
        runs = len(f.read())
        f.write("x")
    if runs < 2:
        raise RetryTask(delay=0.5)
    return runs


@huey.task(retries=2)
def always_fails():
    raise ValueError("no luck")


FIXED = os.environ.get("TRUTH_FIXED", "fixed.txt")


@huey.task(retries=1)
def fails_once(n):
    """Fails on its first attempt, in a process that flushes; then returns."""
    if not os.environ.get("TRUTH_FLUSH"):
        raise ValueError("first attempt")
    return n


@huey.task()
def returns_none():
    return None


@huey.task(retries=1)
def fails_until_fixed():
    """Fails (twice: one retry) until the file TRUTH_FIXED exists."""
    if not os.path.exists(FIXED):
        raise ValueError("not fixed yet")
    return "fixed"


@huey.periodic_task(crontab(minute="*"))
def every_minute():
    """Declared periodic: the scheduler enqueues it as the consumer starts."""
