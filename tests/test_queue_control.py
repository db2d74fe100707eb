"""Control of what consumers take, with real processes: pause and resume,
unique tasks.

Consumers run ``hueyscope consume --app ledger_app:huey`` on one SQLite
queue file; the tasks write a ledger (tests/ledger_app.py), so a test
knows which task started, in which order and in which process.
"""
import contextlib
import json
import subprocess
import sys

import pytest

import ledger_app
from conftest import assert_one_line_error, postgres_schema, query, wait_until
from test_delivery import app, consume  # noqa: F401 (app: a fixture)
from test_delivery import enqueue as produce


def done_ns(cli):
    """The ``n`` of each finished task, in the order they finished."""
    return [int(n) for kind, _, n, _ in ledger_app.ledger(cli.ledger)
            if kind == "done"]


def wait_done(cli, n, timeout=60):
    wait_until(lambda: n in done_ns(cli), timeout=timeout,
               message="task %d done" % n)


def status(cli):
    result = cli.run("status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["queues"]["ledger"]


@pytest.mark.timeout(180)
def test_a_pause_outlives_a_restart_and_resume_keeps_the_order(app):
    paused = app.run("pause", "--task", "work")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip() == "paused ledger_app.work"
    produce(app, "[a.work(n) for n in range(5)]; a.locked(100)")
    consumer = consume(app, "--workers", "1")
    # The consumer took the task behind the paused ones, and none of these.
    wait_done(app, 100)
    assert done_ns(app) == [100]
    held = status(app)["paused"]
    assert [(p["task"], p["held_back"]) for p in held] == [("ledger_app.work", 5)]
    assert consumer.stop() == 0, consumer.describe()

    consumer = consume(app, "--workers", "1", name="again")
    produce(app, "a.locked(101)")
    wait_done(app, 101)
    assert done_ns(app) == [100, 101]
    resumed = app.run("resume", "--task", "work")
    assert resumed.returncode == 0, resumed.stderr
    wait_until(lambda: len(done_ns(app)) == 7, timeout=60, message="all done")
    assert done_ns(app) == [100, 101, 0, 1, 2, 3, 4]  # the order they were queued
    assert consumer.stop() == 0, consumer.describe()
    assert status(app)["paused"] == []
    wait_until(lambda: query(app.events, "select signal, task from events where "
                             "signal in ('pause', 'resume') order by id"),
               timeout=30, message="pause and resume recorded")
    assert query(app.events, "select signal, task, error from events where "
                 "signal in ('pause', 'resume') order by id") == [
        ("pause", "ledger_app.work", "pause by hand (every task of the name)"),
        ("resume", "ledger_app.work", "resume by hand (every task of the name)")]


@pytest.mark.timeout(120)
def test_pause_and_resume_refuse_bad_input_and_change_nothing(app):
    produce(app, "a.work(0)")
    for args, message in [
            (("pause",), "give --task NAME or --all, not neither"),
            (("pause", "--task", "work", "--all"), "not both"),
            (("pause", "--task", "nope"), "no task 'nope'"),
            (("resume", "--task", "work"), "task ledger_app.work not paused"),
            (("resume", "--all"), "the queue not paused")]:
        result = app.run(*args)
        assert_one_line_error(result)
        assert message in result.stderr
    assert status(app)["paused"] == []
    dry = app.run("pause", "--all", "--dry-run")
    assert dry.stdout.strip() == "would pause the whole queue"
    assert status(app)["paused"] == []


# -- unique tasks ---------------------------------------------------------------

# A producer that enqueues the same unique task ``count`` times once told
# to start, and prints how many of its enqueues were written.
RACER = """
import sys
import hueyscope
engine, where, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
if engine == "sqlite":
    from hueyscope.queue.sqlite import SqliteHuey
    huey = SqliteHuey("race", filename=where, timeout=60)
else:
    from hueyscope.queue.postgres import LeasedPostgresHuey
    huey = LeasedPostgresHuey("race", dsn=where, blocking=False, utc=True)

@huey.task(unique=True)
def once(n):
    return n

huey.storage.queue_size()  # the queue is open before the start
print("ready", flush=True)
sys.stdin.readline()
print(sum(not isinstance(once(1), hueyscope.Deduplicated)
          for _ in range(count)), flush=True)
"""


@contextlib.contextmanager
def race_queue(engine, tmp_path):
    if engine == "sqlite":
        yield str(tmp_path / "race.db")
    else:
        with postgres_schema() as (_, _, where):
            yield where


@pytest.mark.timeout(600)
@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_two_producers_racing_one_key_a_thousand_times_leave_one_task(
        engine, tmp_path):
    from hueyscope.queue import control
    from hueyscope.queue.postgres import LeasedPostgresHuey
    from hueyscope.queue.sqlite import SqliteHuey

    with race_queue(engine, tmp_path) as where:
        racers = [subprocess.Popen(
            [sys.executable, "-c", RACER, engine, where, "1000"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True) for _ in range(2)]
        try:
            for racer in racers:  # both ready, then both go
                assert racer.stdout.readline().strip() == "ready", \
                    racer.stderr.read()
            for racer in racers:
                racer.stdin.write("go\n")
                racer.stdin.flush()
            written = []
            for racer in racers:
                out, err = racer.communicate(timeout=540)
                assert racer.returncode == 0, err
                written.append(int(out))
        finally:
            for racer in racers:
                if racer.poll() is None:
                    racer.kill()
        assert sum(written) == 1, written
        huey = SqliteHuey("race", filename=where) if engine == "sqlite" else \
            LeasedPostgresHuey("race", dsn=where, blocking=False, utc=True)
        try:
            assert huey.pending_count() == 1
            assert len(control.held_keys(huey.storage)) == 1
        finally:
            huey.storage.close()


@pytest.mark.timeout(180)
def test_a_deduplicated_enqueue_is_recorded_and_the_key_freed_by_the_outcome(app):
    out = produce(app, "import hueyscope; first = a.unique_work(1); "
                  "again = a.unique_work(1); "
                  "print(first.id, again.task_id, again.__class__.__name__, "
                  "hueyscope.Deduplicated.__name__)")
    first, holder, kind, _ = out.split()
    assert (holder, kind) == (first, "Deduplicated")
    wait_until(lambda: query(app.events, "select status from tasks where "
                             "status = 'deduplicated'"), timeout=30,
               message="the deduplicated enqueue recorded")
    (task_id, error), = query(app.events, "select task_id, error from events "
                              "where signal = 'deduplicated'")
    assert task_id != first and error.endswith("is held by task %s" % first)
    consumer = consume(app, "--workers", "1")
    wait_done(app, 1)
    # Its outcome freed the key: the same task may be enqueued again.
    wait_until(lambda: produce(app, "import hueyscope; print(isinstance("
                               "a.unique_work(1), hueyscope.Deduplicated))"
                               ).strip() == "False", timeout=30,
               message="the key freed")
    wait_until(lambda: done_ns(app) == [1, 1], timeout=60, message="run again")
    assert consumer.stop() == 0, consumer.describe()


# -- concurrency limits -----------------------------------------------------------

def most_running(lines, killed=None, at=None):
    """The most tasks running at once by the ledger ``lines``.

    The process ``killed`` was killed once the ledger had ``at`` lines:
    what it was running stopped there.
    """
    running, most = set(), 0
    for i, (kind, task_id, _, pid) in enumerate(lines):
        if i == at:
            running = {(t, p) for t, p in running if p != killed}
        if kind == "start":
            running.add((task_id, pid))
        elif kind == "done":
            running.discard((task_id, pid))
        most = max(most, len(running))
    return most


@contextlib.contextmanager
def queue_of(app, engine):
    if engine == "sqlite":
        yield
    else:
        with postgres_schema() as (_, _, where):
            app.env["HUEYSCOPE_QUEUE"] = where
            yield


@pytest.mark.timeout(300)
@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_a_limit_of_two_over_three_consumers_holds_when_one_is_killed(app, engine):
    with queue_of(app, engine):
        produce(app, "[a.capped(n, 1.5) for n in range(8)]")
        consumers = [consume(app, "--workers", "2", name="consumer%d" % i)
                     for i in range(3)]
        pids = {str(c.pid): c for c in consumers}

        def holding():
            """A consumer running a task now: (its pid, the task id)."""
            lines = ledger_app.ledger(app.ledger)
            done = {(t, p) for kind, t, _, p in lines if kind == "done"}
            for kind, task_id, _, pid in lines:
                if kind == "start" and (task_id, pid) not in done and pid in pids:
                    return pid, task_id
            return None

        victim, task_id = wait_until(holding, timeout=120,
                                     message="a consumer running a task")
        pids[victim].kill()  # SIGKILL, holding a slot; returns once it is gone
        lines = ledger_app.ledger(app.ledger)
        killed_at = len(lines)
        assert ("done", task_id, victim) not in {(k, t, p) for k, t, _, p in lines}, \
            "the task finished before its consumer was killed"
        wait_until(lambda: {int(n) for kind, _, n, pid in ledger_app.ledger(
            app.ledger) if kind == "done" and pid != victim} == set(range(8)),
            timeout=240, message="every task done by the live consumers")
        lines = ledger_app.ledger(app.ledger)
        assert most_running(lines, victim, killed_at) == 2, lines
        for consumer in consumers:
            if str(consumer.pid) != victim:
                assert consumer.stop() == 0, consumer.describe()


@pytest.mark.timeout(120)
def test_a_limit_of_zero_is_refused_with_one_line_and_nothing_made(cli):
    (cli.folder / "zero_app.py").write_text(
        "from hueyscope.queue import make_huey\n"
        "from hueyscope.settings import Settings\n"
        "huey = make_huey(Settings.build(), name='zero')\n\n"
        "@huey.task(concurrency=0)\n"
        "def never(n):\n"
        "    return n\n")
    for args in (("consume", "--app", "zero_app.py:huey"),
                 ("pause", "--all", "--app", "zero_app.py:huey")):
        result = cli.run(*args)
        assert_one_line_error(result)
        assert "task zero_app.never: concurrency=0: give a whole number of 1 " \
               "or more" in result.stderr
        assert not cli.queue.exists()
