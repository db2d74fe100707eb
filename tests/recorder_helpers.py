"""A test app for the recorder tests, and an independent tally of huey's signals.

:func:`build` makes a fresh Huey (hueyscope's own ``make_huey``) on a given
queue and event store, attaches the recorder, and defines the tasks of the
deterministic workload on it. The task functions are defined in this module,
so their registered names (``recorder_helpers.ok``...) are the same in every
process that builds the app, and forked worker processes inherit them.

:func:`count_signals` connects a second signal handler to the same Huey
that appends ``signal task_id pid`` to a file of its own process
(``<folder>/<pid>.log``), one ``write`` per line. Those files are what huey
emitted, counted without any hueyscope code: the recorder's rows are compared
with them.

``--app recorder_helpers:huey`` works too: the module attribute ``huey`` is
built on first access from the ``HUEYSCOPE_*`` settings (which
``hueyscope consume`` exports before importing an app), counting into the
folder named by ``RECORDER_TEST_COUNTS`` if set.
"""
import collections
import os
import sqlite3
import threading
import types
from pathlib import Path

from huey.exceptions import CancelExecution, RetryTask

import hueyscope
from hueyscope.queue import make_huey
from hueyscope.settings import Settings

COUNTS_ENV = "RECORDER_TEST_COUNTS"
# The lock every guarded() copy takes: the test holds it to force a collision.
LOCK = "recorder-test-lock"
FAIL_RETRIES = 2


def count_signals(huey, folder):
    """Tally every signal ``huey`` emits into ``folder/<pid>.log``."""
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)

    @huey.signal()
    def tally(signal, task, *args, **kwargs):
        line = "%s %s %d\n" % (signal, task.id, os.getpid())
        # One write() of one short line in append mode: atomic between the
        # threads and processes that share the file.
        with open(os.path.join(folder, "%d.log" % os.getpid()), "a") as f:
            f.write(line)

    return tally


def emitted(folder, with_pid=False):
    """Counter of (signal, task_id[, pid]) that huey emitted, all processes."""
    counts = collections.Counter()
    for path in Path(folder).glob("*.log"):
        for line in path.read_text().splitlines():
            signal, task_id, pid = line.split()
            counts[(signal, task_id, int(pid)) if with_pid else (signal, task_id)] += 1
    return counts


def recorded(events, with_pid=False):
    """Counter of (signal, task_id[, pid]) of the rows in the event store."""
    conn = sqlite3.connect("file:%s?mode=ro" % events, uri=True, timeout=10)
    try:
        rows = conn.execute("select signal, task_id, pid from events").fetchall()
    finally:
        conn.close()
    return collections.Counter(
        (s, t, p) if with_pid else (s, t) for s, t, p in rows)


def define_tasks(huey):
    """The tasks of the workload, on ``huey``; a namespace of task wrappers."""

    @huey.task()
    def ok(x):
        return x

    @huey.task(retries=FAIL_RETRIES)
    def always_fail(x):
        raise ValueError("always fails (%d)" % x)

    # Retried quickly while the test holds LOCK, then runs once it is free.
    @huey.task(retries=50, retry_delay=0.1)
    @huey.lock_task(LOCK)
    def guarded(x):
        return x

    @huey.task()
    def cancel_me(x):
        return x

    @huey.task()
    def step_one(x):
        return x + 1

    @huey.task()
    def step_two(x, k):
        return x * k

    @huey.task()
    def step_three(x):
        return {"stored": x}

    # Asks huey for another go (RetryTask) until it ran ``times`` times;
    # the runs are counted in a file, as the task has no other state.
    @huey.task()
    def retry_until(path, times):
        runs = len(Path(path).read_text()) + 1 if Path(path).exists() else 1
        with open(path, "a") as f:
            f.write("x")
        if runs < times:
            raise RetryTask()
        return runs

    @huey.pre_execute()
    def cancel_some(task):
        if task.name == "cancel_me":
            raise CancelExecution(retry=False)

    return types.SimpleNamespace(
        ok=ok, always_fail=always_fail, guarded=guarded, cancel_me=cancel_me, retry_until=retry_until,
        step_one=step_one, step_two=step_two, step_three=step_three)


def build(queue, events, counts=None, **attach_options):
    """(huey, recorder, tasks): a fresh app on ``queue`` and ``events``."""
    settings = Settings(queue=str(queue), events=str(events))
    huey = make_huey(settings)
    recorder = hueyscope.attach(huey, events=str(events), **attach_options)
    if counts is not None:
        count_signals(huey, counts)
    tasks = define_tasks(huey)
    return huey, recorder, tasks


_app = None
_app_lock = threading.Lock()


def __getattr__(name):
    # ``--app recorder_helpers:huey``: built when first asked for, so that
    # importing this module in the test process touches no file.
    global _app
    if name not in ("huey", "tasks"):
        raise AttributeError(name)
    with _app_lock:
        if _app is None:
            settings = Settings.build()
            huey, _, tasks = build(settings.queue, settings.events,
                                   counts=os.environ.get(COUNTS_ENV))
            _app = (huey, tasks)
    return _app[0] if name == "huey" else _app[1]


def run_queue(huey):
    """Execute queued tasks in this process until the queue is empty (huey's
    own way of testing: dequeue and execute, no consumer)."""
    while True:
        task = huey.dequeue()
        if task is None:
            return
        huey.execute(task)
