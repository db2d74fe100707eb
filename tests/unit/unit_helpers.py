"""Helpers of the unit tier: real objects in this process, no subprocess, no server.

(Not a conftest.py: the tier shares tests/conftest.py, and pytest loads each
conftest.py outside a package as the module ``conftest``, the later one
replacing the earlier in ``sys.modules`` -- an ``import conftest`` inside a
test of the other tiers would then get this one. Test modules define their
fixtures from the helpers here.)

A leased queue here is a real :class:`hueyscope.SqliteHuey` on a SQLite file
in ``tmp_path``, driven by hand as huey's own tests drive a Huey: enqueue,
``dequeue()``, ``execute(task)``. Nothing waits on time.
"""
import sqlite3

from hueyscope.queue.sqlite import SqliteHuey


def make_queue(path, name="unit"):
    """A leased SqliteHuey on ``path`` with a few tasks, recovery left to the test."""
    huey = SqliteHuey(name, filename=str(path))
    # Recovery runs when a test asks for it, not at the first dequeue.
    huey.recover_on_dequeue = False

    @huey.task()
    def add(a, b):
        return a + b

    @huey.task()
    def nothing():
        return None

    @huey.task()
    def unpicklable():
        return lambda: None  # a result no write can store

    huey.tasks = {"add": add, "nothing": nothing, "unpicklable": unpicklable}
    return huey


def leased_queue(tmp_path):
    """A fixture's body: :func:`make_queue` in ``tmp_path``, closed after the test."""
    huey = make_queue(tmp_path / "queue.db")
    yield huey
    huey.storage.close()  # stops the heartbeat thread


def rows(path, sql, params=()):
    """Rows of ``sql`` on the SQLite file ``path``, through a connection of its own."""
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def count(huey, table):
    return rows(huey.storage.filename, "select count(*) from %s" % table)[0][0]
