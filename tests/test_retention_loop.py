"""Automatic retention: ``hueyscope consume --retention DURATION``."""
import logging
import signal
import sqlite3
import time

import pytest
import sqlite_utils

from conftest import assert_one_line_error, query, scalar, wait_until
from hueyscope.consumer.retention import RetentionLoop, prune_interval
from hueyscope.settings import parse_duration
from hueyscope.settings import DEFAULT_RETENTION

DAY = 86400.0
OLD_EVENTS, OLD_TASKS, OLD_SAMPLES = 40, 8, 5


def add_old_history(path, now, age=3 * DAY, prefix="old"):
    """Rows ``age`` seconds old, as a consumer would have written them:
    events, finished tasks, queue samples and their roll-ups; plus an old
    task that may still run (which retention must keep). Task ids and the
    run id start with ``prefix``; returns the roll-up's hour."""
    old = now - age
    hour = old - old % 3600
    db = sqlite_utils.Database(path)
    db["events"].insert_all(
        {"ts": old + i, "run_id": prefix + "-run", "queue": "hueyscope",
         "task_id": "%s-%d" % (prefix, i % OLD_TASKS), "task": "quick_add",
         "signal": "complete", "attempt": 1, "duration": 0.01,
         "args": "[1, 2]", "kwargs": "{}"}
        for i in range(OLD_EVENTS))
    db["tasks"].insert_all(
        {"task_id": "%s-%d" % (prefix, i), "task": "quick_add",
         "queue": "hueyscope", "status": "complete", "enqueued": old,
         "started": old, "finished": old + 1, "attempts": 1, "updated": old + 1}
        for i in range(OLD_TASKS))
    db["tasks"].insert({"task_id": prefix + "-waiting", "task": "fetch",
                        "queue": "hueyscope", "status": "enqueued",
                        "enqueued": old, "updated": old})
    db["queue_samples"].insert_all(
        {"ts": old + i, "queue": "hueyscope", "pending": 1, "scheduled": 0,
         "in_flight": 0, "run_id": prefix + "-run"} for i in range(OLD_SAMPLES))
    db["rollup_hourly"].insert(
        {"hour": hour, "task": "quick_add", "signal": "complete",
         "count": OLD_EVENTS, "duration_sum": OLD_EVENTS * 0.01,
         "duration_max": 0.01, "wait_sum": 0.0})
    db.close()
    return hour


def old_counts(path, cutoff, since=0):
    """(events, finished tasks, queue samples) from ``since`` to ``cutoff``."""
    span = (since, cutoff)
    return (scalar(path, "select count(*) from events where ts >= ? and ts < ?",
                   span),
            scalar(path, "select count(*) from tasks where finished >= ? and "
                   "finished < ?", span),
            scalar(path, "select count(*) from queue_samples where ts >= ? and "
                   "ts < ?", span))


def wait_for_mixed(cli, consumer):
    """Wait until the consumer completed the 7 tasks of the mixed scenario
    (the seeded tasks are older than an hour) or exited."""
    since = time.time() - 3600
    wait_until(lambda: scalar(cli.events, "select count(*) from tasks where "
                              "status = 'complete' and finished >= ?",
                              (since,)) == 7
               or consumer.proc.poll() is not None, timeout=30,
               message="the mixed scenario to complete")


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


@pytest.mark.timeout(90)
def test_a_consumer_started_without_retention_prunes_past_the_default(cli):
    assert cli.run("produce", "mixed").returncode == 0
    now = time.time()
    default = parse_duration(DEFAULT_RETENTION)
    # History from before the default period, and from within it.
    old_hour = add_old_history(cli.events, now, age=1.5 * default)
    kept_hour = add_old_history(cli.events, now, age=0.5 * default,
                                prefix="recent")
    cutoff = now - default
    assert old_counts(cli.events, cutoff) == (OLD_EVENTS, OLD_TASKS, OLD_SAMPLES)
    rollups = query(cli.events, "select * from rollup_hourly where hour <= ? "
                    "order by hour", (kept_hour,))
    assert [row[0] for row in rollups] == [old_hour, kept_hour]

    consumer = cli.start("consume", "--workers", "2", "--no-periodic",
                         "--max-delay", "0.2", name="consumer")
    wait_until(lambda: old_counts(cli.events, cutoff) == (0, 0, 0)
               or consumer.proc.poll() is not None, timeout=30,
               message="history older than %s to be pruned" % DEFAULT_RETENTION)
    wait_for_mixed(cli, consumer)
    assert consumer.proc.poll() is None, consumer.describe()
    assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()

    assert old_counts(cli.events, cutoff) == (0, 0, 0)
    # Within the period everything stays, and so do the roll-ups of both.
    assert old_counts(cli.events, now - 3600, since=cutoff) == (
        OLD_EVENTS, OLD_TASKS, OLD_SAMPLES)
    assert query(cli.events, "select * from rollup_hourly where hour <= ? "
                 "order by hour", (kept_hour,)) == rollups
    assert scalar(cli.events, "select count(*) from tasks where task_id in "
                  "('old-waiting', 'recent-waiting')") == 2
    assert ("Retention: deleted %d events, %d tasks, %d queue samples"
            % (OLD_EVENTS, OLD_TASKS, OLD_SAMPLES)) in consumer.stderr


@pytest.mark.timeout(90)
@pytest.mark.parametrize("how", ["flag", "environment"])
def test_retention_none_keeps_everything(cli, how):
    assert cli.run("produce", "mixed").returncode == 0
    now = time.time()
    age = 3 * parse_duration(DEFAULT_RETENTION)
    add_old_history(cli.events, now, age=age)
    args, env = (("--retention", "none"), {}) if how == "flag" else \
        ((), {"HUEYSCOPE_RETENTION": "None"})
    consumer = cli.start("consume", "--workers", "2", "--no-periodic",
                         "--max-delay", "0.2", *args, name="consumer", **env)
    wait_for_mixed(cli, consumer)
    assert consumer.proc.poll() is None, consumer.describe()
    assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()
    assert "Retention: none; the event store" in consumer.stderr
    assert "Retention: deleted" not in consumer.stderr
    assert old_counts(cli.events, now - age + 3600) == (
        OLD_EVENTS, OLD_TASKS, OLD_SAMPLES)


def test_the_consumer_help_gives_the_default_retention(cli):
    result = cli.run("consume", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "--retention DURATION|none" in text
    assert "default: %s]" % DEFAULT_RETENTION in text
    assert "'none' keeps everything" in text


@pytest.mark.parametrize("value,message", [
    ("30days", "'30days' is not a duration"),
    ("0", "'0' is not a duration"),
    ("0d", "duration must be more than zero"),
    ("-3d", "'-3d' is not a duration"),
    ("never", "'never' is not a duration"),
])
def test_a_bad_retention_is_one_line_naming_none(cli, value, message):
    result = cli.run("consume", "--retention", value)
    assert_one_line_error(result)
    assert message in result.stderr and "or none to keep everything" in result.stderr
    assert not cli.queue.exists() and not cli.events.exists()


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
