"""Automatic retention: ``hueyscope consume --retention DURATION``."""
import logging
import signal
import sqlite3
import time

import pytest
import sqlite_utils

from conftest import assert_one_line_error, query, scalar, wait_until
from hueyscope.consumer.retention import RetentionLoop, prune_interval

DAY = 86400.0
OLD_EVENTS, OLD_TASKS, OLD_SAMPLES = 40, 8, 5


def add_old_history(path, now):
    """Rows three days old, as a consumer would have written them: events,
    finished tasks, queue samples and their roll-ups; plus an old task that
    may still run (which retention must keep)."""
    old = now - 3 * DAY
    hour = old - old % 3600
    db = sqlite_utils.Database(path)
    db["events"].insert_all(
        {"ts": old + i, "run_id": "old-run", "queue": "hueyscope",
         "task_id": "old-%d" % (i % OLD_TASKS), "task": "quick_add",
         "signal": "complete", "attempt": 1, "duration": 0.01,
         "args": "[1, 2]", "kwargs": "{}"}
        for i in range(OLD_EVENTS))
    db["tasks"].insert_all(
        {"task_id": "old-%d" % i, "task": "quick_add", "queue": "hueyscope",
         "status": "complete", "enqueued": old, "started": old,
         "finished": old + 1, "attempts": 1, "updated": old + 1}
        for i in range(OLD_TASKS))
    db["tasks"].insert({"task_id": "old-waiting", "task": "fetch",
                        "queue": "hueyscope", "status": "enqueued",
                        "enqueued": old, "updated": old})
    db["queue_samples"].insert_all(
        {"ts": old + i, "queue": "hueyscope", "pending": 1, "scheduled": 0,
         "in_flight": 0, "run_id": "old-run"} for i in range(OLD_SAMPLES))
    db["rollup_hourly"].insert(
        {"hour": hour, "task": "quick_add", "signal": "complete",
         "count": OLD_EVENTS, "duration_sum": OLD_EVENTS * 0.01,
         "duration_max": 0.01, "wait_sum": 0.0})
    db.close()
    return hour


def old_counts(path, cutoff):
    return (scalar(path, "select count(*) from events where ts < ?", (cutoff,)),
            scalar(path, "select count(*) from tasks where finished < ?", (cutoff,)),
            scalar(path, "select count(*) from queue_samples where ts < ?", (cutoff,)))


@pytest.mark.timeout(90)
def test_consumer_prunes_old_history_and_keeps_rollups(cli):
    # A real store, made by a real producer: 7 fresh enqueued events.
    result = cli.run("produce", "mixed")
    assert result.returncode == 0, result.stderr
    now = time.time()
    hour = add_old_history(cli.events, now)
    cutoff = now - DAY
    assert old_counts(cli.events, cutoff) == (OLD_EVENTS, OLD_TASKS, OLD_SAMPLES)
    rollup = query(cli.events, "select * from rollup_hourly where hour = ?", (hour,))
    assert len(rollup) == 1

    consumer = cli.start("consume", "--retention", "1d", "--workers", "2",
                         "--no-periodic", "--max-delay", "0.2", name="consumer")
    wait_until(lambda: old_counts(cli.events, cutoff) == (0, 0, 0)
               or consumer.proc.poll() is not None, timeout=30,
               message="the old history to be pruned")
    wait_until(lambda: cli.task_statuses().get("complete") == 7
               or consumer.proc.poll() is not None, timeout=30,
               message="the mixed scenario to complete")
    assert consumer.proc.poll() is None, consumer.describe()
    assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()

    assert old_counts(cli.events, cutoff) == (0, 0, 0)
    # Recent history stays: the producer's events and the consumer's own.
    assert scalar(cli.events, "select count(*) from events where signal = "
                  "'enqueued' and ts >= ?", (cutoff,)) == 7
    assert scalar(cli.events, "select count(*) from events where signal = "
                  "'complete'") == 7
    # Roll-ups survive; so does the old task that may still run.
    assert query(cli.events, "select * from rollup_hourly where hour = ?",
                 (hour,)) == rollup
    assert scalar(cli.events, "select status from tasks where task_id = "
                  "'old-waiting'") == "enqueued"
    assert query(cli.events, "select stop_reason from runs where role = "
                 "'consumer'") == [("graceful",)]
    assert ("Retention: deleted %d events, %d tasks, %d queue samples"
            % (OLD_EVENTS, OLD_TASKS, OLD_SAMPLES)) in consumer.stderr
    assert scalar(cli.events, "pragma integrity_check") == "ok"


def test_bad_retention_from_the_environment_is_one_line(cli):
    result = cli.run("consume", HUEYSCOPE_RETENTION="30days")
    assert_one_line_error(result)
    assert "HUEYSCOPE_RETENTION" in result.stderr and "'30days'" in result.stderr


@pytest.mark.parametrize("retention,interval", [
    (90, 60), (600, 60), (3600, 360), (DAY, 3600), (30 * DAY, 3600)])
def test_prune_interval_is_a_tenth_between_a_minute_and_an_hour(retention, interval):
    assert prune_interval(retention) == interval


def test_a_failing_prune_is_logged_and_retried_never_raised(tmp_path, caplog):
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("create table invoices (total real)")
    conn.commit()
    conn.close()
    loop = RetentionLoop(str(foreign), DAY, interval=0.05)
    with caplog.at_level(logging.WARNING, logger="hueyscope.consumer"):
        loop.start()
        wait_until(lambda: loop.failures >= 2, timeout=10,
                   message="two failed prunes")
        assert loop.stop(timeout=5)
    assert loop.runs == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "not a hueyscope event store" in warnings[0].getMessage()
    assert query(foreign, "select name from sqlite_master") == [("invoices",)]


def test_stop_does_not_wait_for_the_next_interval(tmp_path):
    loop = RetentionLoop(str(tmp_path / "not-yet.db"), DAY)
    assert loop.interval == 3600
    loop.start()
    started = time.monotonic()
    assert loop.stop(timeout=5)
    assert time.monotonic() - started < 5
    assert (loop.runs, loop.failures) == (0, 0)
