"""A test app for the console: tasks that fail, fail until fixed, or hold a worker.

The queue and store come from ``HUEYSCOPE_QUEUE`` (a SQLite file or a
postgresql:// URL) and ``HUEYSCOPE_EVENTS``; ``CONSOLE_DIR`` is the folder
of the marker files: ``fixed`` makes ``fails_until_fixed`` succeed, and
``holds`` writes ``held-<n>`` once it runs and then waits for ``release``.
"""
import os
import time

import hueyscope

FOLDER = os.environ.get("CONSOLE_DIR", ".")
if "://" in os.environ["HUEYSCOPE_QUEUE"]:
    from hueyscope.queue import make_huey
    from hueyscope.settings import Settings

    huey = make_huey(Settings.build(), name="console", utc=True)
else:
    huey = hueyscope.SqliteHuey("console", filename=os.environ["HUEYSCOPE_QUEUE"],
                                utc=True)
hueyscope.attach(huey, os.environ["HUEYSCOPE_EVENTS"], flush_interval=0.2)


def _marker(name):
    return os.path.join(FOLDER, name)


@huey.task()
def add(a, b):
    return a + b


@huey.task()
def always_fails():
    raise KeyError("never")


@huey.task()
def fails_until_fixed(n):
    if not os.path.exists(_marker("fixed")):
        raise ValueError("not fixed yet")
    return n


@huey.task()
def holds(n):
    """Runs until the file ``release`` exists (a consumer is killed meanwhile)."""
    with open(_marker("held-%d" % n), "w"):
        pass
    while not os.path.exists(_marker("release")):
        time.sleep(0.05)
    return n
