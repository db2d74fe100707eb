"""The record tells the truth in huey's edge cases.

Each test runs the case as a user would -- a producer process and a real
``hueyscope consume`` on tests/truth_app.py -- and asserts the value the
event store must hold: etas and waits under any time zone, a rescheduled
pipeline step, RetryTask attempts, declared periodic tasks, an enqueue that
raised, a task the consumer does not have, and the events a run wrote.
"""
import json
import subprocess
import time
import sys
from pathlib import Path

import pytest

from conftest import query, scalar, wait_until

TESTS = Path(__file__).parent


@pytest.fixture
def app(cli):
    """The ``cli`` fixture, set up for truth_app."""
    cli.env.update(PYTHONPATH=str(TESTS), HUEYSCOPE_APP="truth_app:huey",
                   TRUTH_COUNTER=str(cli.folder / "retries.txt"))
    return cli


def produce(cli, code, check=True, **env):
    """Run ``code`` with truth_app imported as ``a``, in a producer process."""
    proc = subprocess.run(
        [sys.executable, "-c", "import truth_app as a; " + code],
        cwd=cli.folder, env=dict(cli.env, **env), capture_output=True,
        text=True, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def consume(cli, *args, periodic=False, name="consumer", **env):
    return cli.start("consume", "--max-delay", "0.1", "--heartbeat-every", "0.5",
                     "-w", "2", "--periodic" if periodic else "--no-periodic",
                     *args, name=name, **env)


def statuses(cli, *task_ids):
    rows = dict(query(cli.events, "select task_id, status from tasks"))
    return [rows.get(t) for t in task_ids]


def all_complete(cli, *task_ids):
    return all(s == "complete" for s in statuses(cli, *task_ids))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("utc", [True, False], ids=["utc", "local"])
@pytest.mark.parametrize("tz", ["Asia/Tokyo", "America/New_York", "UTC"])
def test_eta_and_wait_are_right_in_any_time_zone(app, tz, utc):
    env = dict(TZ=tz, TRUTH_UTC="1" if utc else "0")
    ids = produce(app, "print(a.add.schedule((1, 2), delay=3).id, "
                  "a.add(3, 4).id)", **env).stdout.split()
    consumer = consume(app, **env)
    wait_until(lambda: all_complete(app, *ids), message="both tasks to complete")
    assert consumer.stop() == 0
    delayed, now = ids
    # The producer's enqueue (the scheduler enqueues it again when due).
    eta_minus_ts = scalar(app.events, "select eta - ts from events where "
                          "task_id = ? and signal = 'enqueued' order by id "
                          "limit 1", (delayed,))
    assert abs(eta_minus_ts - 3) < 0.5
    waits = query(app.events, "select task_id, wait from tasks")
    assert len(waits) == 2 and all(0 <= w < 5 for _, w in waits), waits
    assert all(w >= 0 for w, in query(
        app.events, "select wait from events where signal = 'executing'"))


@pytest.mark.timeout(60)
def test_a_rescheduled_first_step_is_its_next_steps_parent(app):
    first, old_transform = produce(app, """
steps = list(a.huey.enqueue(a.fetch.s(1).then(a.transform).then(a.store)))
new = list(steps[0].reschedule(delay=1))
print(new[0].id, steps[1].id)""").stdout.split()
    consumer = consume(app)
    wait_until(lambda: scalar(app.events, "select count(*) from tasks "
                              "where status = 'complete'") == 3,
               message="the three steps to complete")
    assert consumer.stop() == 0
    parents = dict(query(app.events, "select task, parent_id from tasks "
                         "where status = 'complete'"))
    assert parents["transform"] == first
    assert parents["fetch"] is None
    assert scalar(app.events, "select parent_id from tasks where task_id = ?",
                  (old_transform,)) == first


@pytest.mark.timeout(60)
def test_retry_task_attempts_have_run_time_and_outcome(app):
    task_id = produce(app, "print(a.retry_twice().id)").stdout.strip()
    consumer = consume(app)
    wait_until(lambda: all_complete(app, task_id), message="the third attempt")
    assert consumer.stop() == 0
    rows = query(app.events, "select signal, duration, eta - ts from events "
                 "where task_id = ? order by id", (task_id,))
    signals = [r[0] for r in rows]
    assert signals.count("executing") == 3 and signals.count("retrying") == 2
    assert all(d is not None and d >= 0 for s, d, _ in rows if s == "retrying")
    scheduled = [delay for s, _, delay in rows if s == "scheduled"]
    assert len(scheduled) == 2 and all(0.3 < d < 0.7 for d in scheduled), rows
    assert scalar(app.events, "select attempts from tasks where task_id = ?",
                  (task_id,)) == 3
    # The Retries page: attempts 1 and 2 ended retrying, with a run time,
    # and attempts 2 and 3 waited about the half second asked for.
    from hueyscope.reports.data import attempts_of

    events = [dict(zip(("signal", "ts", "attempt", "wait", "retries_left",
                        "duration", "error_type", "error"), row))
              for row in query(app.events, "select signal, ts, attempt, wait, "
                               "retries_left, duration, error_type, error from "
                               "events where task_id = ? order by id", (task_id,))]
    attempts = attempts_of(events)
    assert [a["outcome"] for a in attempts] == ["retrying", "retrying", "complete"]
    assert all(a["duration"] is not None for a in attempts)
    assert attempts[0]["delay"] is None
    assert all(0.4 < a["delay"] < 2 for a in attempts[1:]), attempts
    assert app.run("report").returncode == 0
    page = (app.site / "retries.html").read_text()
    assert page.count(">retrying<") == 2


@pytest.mark.timeout(60)
def test_only_declared_periodic_tasks_are_recorded_periodic(app):
    produce(app, "a.always_fails(); [a.add.schedule((i, i), delay=0.2) "
                 "for i in range(5)]")
    consumer = consume(app, periodic=True)
    wait_until(lambda: scalar(app.events, "select count(*) from tasks where "
                              "task = 'every_minute' and status = "
                              "'complete'"), message="the periodic task to run")
    wait_until(lambda: scalar(app.events, "select status from tasks where "
                              "task = 'always_fails'") == "failed",
               message="the failing task to use its retries")
    assert consumer.stop() == 0
    declared = query(app.events, "select periodic from runs where role = 'consumer'")
    assert [json.loads(p) for p, in declared] == [["every_minute"]]

    quiet = consume(app)
    wait_until(lambda: scalar(app.events, "select count(*) from runs where "
                              "role = 'consumer'") == 2, message="the second run")
    assert quiet.stop() == 0
    assert scalar(app.events, "select periodic from runs where role = 'consumer' "
                  "order by started desc limit 1") == "[]"
    from hueyscope.reports.data import schedules
    from hueyscope.reports.store import Store

    store = Store([app.events])
    periodic = schedules(store, {})["periodic"]
    assert [(p["task"], p["runs"]) for p in periodic] == [("every_minute", 1)]


@pytest.mark.timeout(60)
def test_an_enqueue_that_raised_is_recorded_never_queued(app):
    # An argument pickle cannot take: huey has already signalled 'enqueued'.
    proc = produce(app, "a.add(lambda: 1, 2)", check=False)
    assert proc.returncode != 0 and "pickle" in proc.stderr.lower()
    # A pipeline whose first step cannot be queued (another connection holds
    # the queue's write lock past the busy timeout): no step will ever run.
    proc = produce(app, "import sqlite3; other = sqlite3.connect("
                   "a.huey.storage.filename, isolation_level=None); "
                   "other.execute('begin exclusive'); "
                   "a.huey.enqueue(a.fetch.s(1).then(a.transform))",
                   check=False, TRUTH_TIMEOUT="0.2")
    assert proc.returncode != 0 and "database is locked" in proc.stderr
    rows = query(app.events, "select task, status, error_type, error from tasks "
                 "order by task")
    assert [(t, s) for t, s, *_ in rows] == [
        ("add", "not-queued"), ("fetch", "not-queued"),
        ("transform", "not-queued")]
    assert rows[0][2] in ("PicklingError", "AttributeError")
    assert rows[1][2:] == ("OperationalError", "database is locked")
    assert scalar(app.events, "select count(*) from events "
                  "where signal = 'not-queued'") == 2


@pytest.mark.timeout(60)
@pytest.mark.parametrize("stock", [False, True], ids=["at-most-once", "stock-huey"])
def test_a_task_the_consumer_does_not_have_is_recorded_dropped(app, stock):
    env = dict(HUEYSCOPE_DELIVERY="at-most-once")
    if stock:
        env["TRUTH_STOCK"] = "1"
    unknown = produce(app, """
@a.huey.task()
def deployed_later():
    pass
print(deployed_later().id); a.add(1, 2)""", **env).stdout.strip()
    consumer = consume(app, **env)
    wait_until(lambda: statuses(app, unknown) == ["dropped"],
               message="the unknown task recorded dropped")
    wait_until(lambda: scalar(app.events, "select count(*) from tasks where "
                              "status = 'complete'") == 1,
               message="the known task to run")
    assert consumer.stop() == 0
    error, = query(app.events, "select error from tasks where task_id = ?",
                   (unknown,))
    assert "not found in TaskRegistry" in error[0]
    assert "Traceback" not in consumer.stderr
    assert "Dropped a message this consumer cannot run" in consumer.stderr


@pytest.mark.timeout(120)
@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_events_written_counts_every_event_of_the_run(app, worker_type):
    produce(app, "[a.add(i, i) for i in range(1500)]")
    consumer = consume(app, "-k", worker_type, "-w", "4")
    wait_until(lambda: scalar(app.events, "select count(*) from tasks where "
                              "status = 'complete'") == 1500, timeout=90,
               message="1500 tasks to complete")
    assert consumer.stop() == 0
    written = dict(query(app.events, "select role, sum(events_written) from runs "
                         "group by role"))
    stored = dict(query(app.events, "select r.role, count(*) from events e "
                        "join runs r on r.id = e.run_id group by r.role"))
    assert written == stored
    assert written["consumer"] == 3000
    assert scalar(app.events, "select count(*) from runs where role = 'consumer' "
                  "and (host is null or started is null)") == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("tz", ["Asia/Tokyo", "America/New_York"])
def test_status_shows_when_a_scheduled_task_is_due_in_any_time_zone(app, tz):
    app.env["TZ"] = tz
    enqueued = time.time()
    produce(app, "a.add.schedule((1, 2), delay=30)")
    consumer = consume(app)
    wait_until(lambda: scalar(app.queue, "select count(*) from schedule"),
               message="the consumer to move the task to the schedule")
    assert consumer.stop() == 0
    result = app.run("status", "--json")
    assert result.returncode == 0, result.stderr
    due = json.loads(result.stdout)["queues"]["truth"]["next_due"]
    assert abs(due - (enqueued + 30)) < 5


@pytest.mark.timeout(90)
@pytest.mark.parametrize("delivery", ["at-least-once", "at-most-once"])
def test_two_consumers_run_a_periodic_task_once_per_tick(app, delivery):
    """Two consumers with schedulers on one queue: each tick claimed is one
    task run once, whatever minutes the test spans on a busy machine."""
    app.env["HUEYSCOPE_DELIVERY"] = delivery

    def claims():
        return query(app.queue, "select tick from hueyscope_periodic_tick "
                     "where task = 'truth_app.every_minute'")

    def runs():
        return scalar(app.events, "select count(*) from events where "
                      "task = 'every_minute' and signal = 'executing'")

    consumers = [consume(app, periodic=True, name=n) for n in ("a", "b")]
    wait_until(lambda: scalar(app.events, "select count(*) from runs where "
                              "role = 'consumer' and heartbeat > started") == 2,
               message="both consumers to be up and beating")
    wait_until(lambda: claims() and runs() == len(claims()),
               message="each claimed tick's task to run")
    for consumer in consumers:
        assert consumer.stop() == 0
    # A tick claimed as the consumers stopped has its task still queued.
    queued = scalar(app.queue, "select count(*) from task")
    assert runs() + queued == len(claims()) >= 1
    assert query(app.events, "select task_id from events where task = "
                 "'every_minute' and signal = 'executing' group by task_id "
                 "having count(*) > 1") == []


# A process that runs tasks with its recorder holding every event, and dies
# once their outcomes are durable in the queue (released leases, stored
# results): the events of those outcomes die with it.
RUN_THEN_DIE = """
import os, truth_app as a
ran = 0
while True:
    task = a.huey.dequeue()
    if task is None:
        break
    a.huey.execute(task)
    ran += 1
a.huey.storage.release_pending()
for key in os.environ["TRUTH_READ"].split():  # results the app read
    a.huey.get(key)
print(ran)
os._exit(0)
"""


@pytest.fixture(params=["sqlite", "postgres"])
def engine_app(request, app):
    """``app`` on a SQLite queue, or on PostgreSQL in a schema of its own;
    ``app.count(table)`` counts a queue table's rows on either."""
    if request.param == "sqlite":
        app.count = lambda table: scalar(app.queue, "select count(*) from %s" % table)
        yield app
        return
    from conftest import postgres_schema

    with postgres_schema() as (admin, schema, url):
        app.env["HUEYSCOPE_QUEUE"] = url
        app.count = lambda table: admin.execute(
            "select count(*) from %s.%s" % (schema, table)).fetchone()[0]
        try:
            yield app
        finally:
            app.close()


@pytest.mark.timeout(120)
def test_outcomes_whose_events_died_are_recorded_from_the_queue(engine_app):
    """A pipeline step recorded only as 'waiting', a task whose first attempt
    failed, a task returning None, a result already read: each finished in
    a process killed before its events were written, and each is shown
    complete once a consumer reconciles, though no result remains."""
    app = engine_app
    # The first attempt of fails_once, recorded: an error, then the retry.
    flaky = produce(app, "t = a.fails_once(5); a.huey.execute(a.huey.dequeue()); "
                    "print(t.id)").stdout.strip()
    wait_until(lambda: query(app.events, "select signal from events where "
                             "task_id = ? and signal = 'retrying'", (flaky,)),
               message="the failed attempt on record")
    ids = produce(app, """
p = a.fetch.s(1).then(a.transform)
a.huey.enqueue(p)
n = a.returns_none()
r = a.add(1, 2)
print(p.id, p.on_complete.id, n.id, r.id)
""").stdout.split()
    fetch, transform, none, read = ids
    ids.append(flaky)
    died = produce(app, RUN_THEN_DIE, TRUTH_FLUSH="3600", TRUTH_READ=read)
    assert died.stdout.split() == ["5"]
    assert statuses(app, *ids) == ["enqueued", "waiting", "enqueued", "enqueued",
                                   "enqueued"]
    assert app.count("hueyscope_lease") == 0
    consumer = consume(app, "--health-check-interval", "0.5")
    wait_until(lambda: all_complete(app, *ids), timeout=60,
               message="every outcome on record")
    assert consumer.stop() == 0, consumer.describe()
    # Nothing ran again: the one execution on record is the failed attempt.
    assert dict(query(app.events, "select task_id, count(*) from events where "
                      "signal = 'executing' group by task_id")) == {flaky: 1}
    assert app.count("hueyscope_settled") == 0
