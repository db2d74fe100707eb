"""Control of what consumers take, with real consumers: pause and resume.

Consumers run ``hueyscope consume --app ledger_app:huey`` on one SQLite
queue file; the tasks write a ledger (tests/ledger_app.py), so a test
knows which task started, in which order and in which process.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

import ledger_app
from conftest import assert_one_line_error, query, wait_until

TESTS = Path(__file__).parent


@pytest.fixture
def app(cli):
    """The ``cli`` fixture, set up for ledger_app."""
    cli.env.update(PYTHONPATH=str(TESTS), LEDGER=str(cli.folder / "ledger.txt"),
                   HUEYSCOPE_APP="ledger_app:huey")
    cli.ledger = cli.folder / "ledger.txt"
    return cli


def produce(cli, code):
    """Run ``code`` with ledger_app imported as ``a``, in a producer process."""
    proc = subprocess.run(
        [sys.executable, "-c", "import ledger_app as a; " + code],
        cwd=cli.folder, env=cli.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def consume(cli, *args, name="consumer"):
    return cli.start("consume", "--no-periodic", "--max-delay", "0.1",
                     "--health-check-interval", "0.5", "--heartbeat-every", "0.5",
                     *args, name=name)


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
