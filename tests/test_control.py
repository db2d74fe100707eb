"""Control of running work: cancel and time limits, with real consumers.

Each test runs ``hueyscope consume --app control_app:huey`` as a process of
its own and a producer process (tests/control_app.py). The stop of a
canceled pure-Python loop is measured between two times the event store
records (the request's ``revoke`` and the task's ``canceled``), printed,
and held to a bound far under the 30 s the loop would run.
"""
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_one_line_error, query, scalar, wait_until

TESTS = Path(__file__).parent
# Far above what the stop takes (under a second on an idle machine), far
# below the 30 s the loop runs if nothing stops it.
STOP_BOUND = 10.0


@pytest.fixture
def app(cli):
    cli.env.update(PYTHONPATH=str(TESTS), HUEYSCOPE_APP="control_app:huey")
    return cli


def enqueue(cli, call):
    code = "import control_app as a; r = a.%s; print(r.id)" % call
    done = subprocess.run([sys.executable, "-c", code], cwd=cli.folder,
                          env=cli.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def events_of(cli, task_id):
    return query(cli.events, "select signal, ts, error from events where "
                 "task_id = ? order by ts, id", (task_id,))


def signals_of(cli, task_id):
    return [row[0] for row in events_of(cli, task_id)]


def wait_signal(cli, task_id, name, timeout=60):
    wait_until(lambda: name in signals_of(cli, task_id), timeout=timeout,
               message="%s of task %s" % (name, task_id))


def consume(cli, *args):
    return cli.start("consume", "--workers", "2", "--no-periodic",
                     "--max-delay", "0.2", *args, name="consumer")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_cancel_stops_a_running_pure_python_loop(app, worker_type):
    consumer = consume(app, "--worker-type", worker_type)
    task_id = enqueue(app, "spin(30)")
    wait_signal(app, task_id, "executing")
    done = app.run("cancel", task_id)
    assert done.returncode == 0, done.stderr
    assert "canceled spin %s (running" % task_id in done.stdout
    wait_signal(app, task_id, "canceled")
    events = {name: (ts, error) for name, ts, error in events_of(app, task_id)}
    took = events["canceled"][0] - events["revoke"][0]
    print("\n%s worker: canceled %.2f s after the request" % (worker_type, took))
    assert took < STOP_BOUND
    # Who asked is on record, and the task's status says canceled.
    assert "canceled by hand, asked by" in events["canceled"][1]
    assert app.task_statuses().get("canceled") == 1
    # The lease is settled, the request gone; the worker runs the next task.
    wait_until(lambda: scalar(app.queue, "select count(*) from hueyscope_lease")
               == 0 and scalar(app.queue, "select count(*) from "
                               "hueyscope_cancel") == 0,
               message="the lease and the request to go")
    after = enqueue(app, "spin(0.1)")
    wait_signal(app, after, "complete")
    assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()
    # Never run again: one execution, nothing left to recover.
    assert signals_of(app, task_id).count("executing") == 1
    assert scalar(app.queue, "select count(*) from task") == 0


@pytest.mark.timeout(120)
def test_cancel_of_a_waiting_task_revokes_it(app):
    task_id = enqueue(app, "spin(1)")
    done = app.run("cancel", task_id, "--dry-run")
    assert done.stdout.strip() == "would cancel spin %s (pending)" % task_id
    assert "revoke" not in signals_of(app, task_id)
    done = app.run("cancel", task_id)
    assert done.stdout.strip() == "canceled spin %s (pending)" % task_id
    consumer = consume(app)
    wait_signal(app, task_id, "revoked")
    assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()
    assert "executing" not in signals_of(app, task_id)


@pytest.mark.timeout(120)
def test_cancel_of_a_finished_or_unknown_task_is_bad_input(app):
    consumer = consume(app)
    finished = enqueue(app, "spin(0.1)")
    wait_signal(app, finished, "complete")
    assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()
    waiting = enqueue(app, "spin(1)")
    before = query(app.queue, "select key from kv order by key")
    for args in ([finished], ["no-such-id"], [waiting, "no-such-id"],
                 ["--task", "spin_limited"], [waiting, "--task", "spin"], []):
        result = app.run("cancel", *args)
        assert_one_line_error(result)
    assert "finished already" in app.run("cancel", finished).stderr
    # Nothing changed: no revocation, no request, the waiting task waits.
    assert query(app.queue, "select key from kv order by key") == before
    assert scalar(app.queue, "select count(*) from hueyscope_cancel") == 0
    assert scalar(app.queue, "select count(*) from task") == 1
    assert "revoke" not in signals_of(app, waiting)


@pytest.mark.timeout(120)
def test_a_thread_worker_enforces_a_time_limit(app):
    consumer = consume(app, "--worker-type", "thread")
    task_id = enqueue(app, "spin_limited(30)")
    wait_signal(app, task_id, "timeout")
    started = dict((n, ts) for n, ts, _ in events_of(app, task_id))
    took = started["timeout"] - started["executing"]
    print("\nthread worker: a 1 s limit stopped the loop after %.2f s" % took)
    assert 1.0 <= took < STOP_BOUND
    assert app.task_statuses() == {"timeout": 1}
    # huey's rule: no retries left, so it joins the failed set.
    assert scalar(app.queue, "select kind from hueyscope_dead_letter") == "failed"
    assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()


@pytest.mark.timeout(120)
def test_a_default_timeout_limits_tasks_without_their_own(app):
    consumer = consume(app, "--worker-type", "thread", "--default-timeout", "1")
    task_id = enqueue(app, "spin(30)")
    wait_signal(app, task_id, "timeout")
    error = [e for n, _, e in events_of(app, task_id) if n == "timeout"][0]
    assert error == "timeout (1.0s)"
    assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()


@pytest.mark.timeout(120)
def test_a_task_waiting_through_hueyscope_stops_at_once(app):
    consumer = consume(app, "--worker-type", "thread")
    task_id = enqueue(app, "polite(30)")
    wait_signal(app, task_id, "executing")
    assert app.run("cancel", "--task", "polite").returncode == 0
    wait_signal(app, task_id, "canceled")
    assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()


@pytest.mark.timeout(180)
def test_cancel_on_postgresql(app):
    from conftest import postgres_schema

    with postgres_schema() as (admin, schema, dsn):
        app.env.update(HUEYSCOPE_QUEUE=dsn)
        consumer = consume(app, "--worker-type", "thread")
        task_id = enqueue(app, "spin(30)")
        wait_signal(app, task_id, "executing")
        assert app.run("cancel", task_id).returncode == 0
        wait_signal(app, task_id, "canceled")
        wait_until(lambda: admin.execute(
            "select count(*) from %s.hueyscope_cancel" % schema).fetchone()[0]
            == 0, message="the request to go")
        assert_one_line_error(app.run("cancel", task_id))
        assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()
        assert admin.execute("select count(*) from %s.hueyscope_lease"
                             % schema).fetchone()[0] == 0


# -- progress and log lines ----------------------------------------------------

def progress_of(cli, task_id):
    rows = query(cli.events, "select fraction, message from task_progress "
                 "where task_id = ?", (task_id,))
    return rows[0] if rows else None


def logs_of(cli, task_id):
    return query(cli.events, "select attempt, level, logger, message from "
                 "task_logs where task_id = ? order by id", (task_id,))


@pytest.mark.timeout(180)
@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_progress_and_log_lines_of_a_running_task(app, worker_type):
    consumer = consume(app, "--worker-type", worker_type)
    release = app.folder / "release"
    task_id = enqueue(app, "half_way(%r)" % str(release))
    wait_until(lambda: progress_of(app, task_id) == (0.5, "half way"),
               message="the task's progress")
    shown = app.run("status")
    assert "half_way %s   50%% half way" % task_id in shown.stdout, shown.stdout
    release.touch()
    wait_signal(app, task_id, "complete")
    wait_until(lambda: progress_of(app, task_id) == (1.0, "done"),
               message="the last progress")
    assert "with progress" not in app.run("status").stdout
    assert logs_of(app, task_id) == [
        (1, "WARNING", "control_app", "waiting for %s" % release)]
    # Redacted, bounded by level: steps logs password=hunter2 at INFO and
    # a line at DEBUG.
    steps = enqueue(app, "steps(2, 0)")
    wait_signal(app, steps, "complete")
    wait_until(lambda: len(logs_of(app, steps)) == 2, message="two log lines")
    assert [m for *_, m in logs_of(app, steps)] == [
        "step 1 of 2 password=***", "step 2 of 2 password=***"]
    assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()

    # On the report's task page, and in Datasette.
    assert app.run("report").returncode == 0
    page = next((app.site / "tasks").glob("half-way-*.html")).read_text()
    assert 'id="progress"' in page and "50%" not in page and "100%" in page
    assert 'id="logs"' in page and "waiting for" in page
    from browse_helpers import get
    from hueyscope.browse.app import make_datasette

    ds = make_datasette([str(app.events)])
    response = get(ds, "/events/task_logs.json?_shape=objects&task_id=%s" % steps)
    assert response.status_code == 200, response.text
    assert [r["message"] for r in response.json()["rows"]] == [
        "step 1 of 2 password=***", "step 2 of 2 password=***"]


@pytest.mark.timeout(120)
def test_log_lines_are_bounded_per_run(app):
    consumer = consume(app)
    task_id = enqueue(app, "chatty(300)")
    wait_signal(app, task_id, "complete")
    wait_until(lambda: len(logs_of(app, task_id)) == 201, message="201 lines")
    lines = logs_of(app, task_id)
    assert lines[199][3] == "line 199"
    assert lines[200][1:] == ("WARNING", "hueyscope", "100 more log record(s) "
                              "of this run not kept (at most 200 a run)")
    assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()


# -- the lock, and recovery ----------------------------------------------------

@pytest.mark.timeout(120)
def test_a_canceled_task_frees_its_lock(app):
    consumer = consume(app, "--worker-type", "thread")
    task_id = enqueue(app, "locked_spin(30)")
    wait_signal(app, task_id, "executing")
    wait_until(lambda: scalar(app.queue, "select count(*) from hueyscope_lock"),
               message="the lock to be held")
    assert app.run("cancel", task_id).returncode == 0
    wait_signal(app, task_id, "canceled")
    wait_until(lambda: scalar(app.queue, "select count(*) from hueyscope_lock")
               == 0, message="the lock to be freed")
    assert not [k for k, in query(app.queue, "select key from kv")
                if "lock" in str(k)]
    # The next task of the lock runs at once.
    after = enqueue(app, "locked_spin(0.1)")
    wait_signal(app, after, "complete")
    assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()


@pytest.mark.timeout(180)
def test_a_task_canceled_after_its_consumer_died_is_never_run_again(app):
    consumer = consume(app, "--worker-type", "thread")
    task_id = enqueue(app, "spin(30)")
    wait_signal(app, task_id, "executing")
    consumer.kill()  # SIGKILL: the lease stays, its holder dead
    done = app.run("cancel", task_id)
    assert done.returncode == 0, done.stderr
    assert "(running" in done.stdout
    consumer = consume(app, "--worker-type", "thread")
    # Recovery puts the message back; huey skips it, revoked.
    wait_signal(app, task_id, "revoked")
    wait_until(lambda: scalar(app.queue, "select count(*) from hueyscope_lease")
               == 0 and scalar(app.queue, "select count(*) from "
                               "hueyscope_cancel") == 0,
               message="the lease and the request to go")
    assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()
    assert signals_of(app, task_id).count("executing") == 1
    assert scalar(app.queue, "select count(*) from task") == 0


@pytest.mark.timeout(120)
def test_a_task_that_catches_the_forced_stop_gets_it_again(app):
    consumer = consume(app, "--worker-type", "thread")
    task_id = enqueue(app, "stubborn(30)")
    wait_signal(app, task_id, "executing")
    assert app.run("cancel", task_id).returncode == 0
    wait_signal(app, task_id, "canceled")
    assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()


@pytest.mark.timeout(120)
def test_a_timed_out_thread_task_is_retried_as_huey_retries(app):
    consumer = consume(app, "--worker-type", "thread")
    task_id = enqueue(app, "spin_retried(30)")
    wait_until(lambda: signals_of(app, task_id).count("timeout") == 2,
               message="two timeouts")
    assert signals_of(app, task_id) == [
        "enqueued", "executing", "timeout", "retrying", "enqueued",
        "executing", "timeout"]
    assert app.task_statuses() == {"timeout": 1}
    assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()


@pytest.mark.timeout(180)
def test_a_worker_process_that_does_not_stop_is_replaced(app):
    consumer = consume(app, "--worker-type", "process",
                       "--health-check-interval", "0.5")
    task_id = enqueue(app, "deaf(60)")
    wait_signal(app, task_id, "executing")
    assert app.run("cancel", task_id).returncode == 0
    wait_signal(app, task_id, "canceled")
    wait_until(lambda: "killing it" in consumer.stderr, message="the kill")
    # Settled by the consumer: nothing for recovery to put back, no
    # revocation left behind; a new worker takes the next task.
    assert scalar(app.queue, "select count(*) from hueyscope_lease") == 0
    assert not [k for k, in query(app.queue, "select key from kv")
                if str(k).startswith("r:")]
    after = enqueue(app, "spin(0.1)")
    wait_signal(app, after, "complete")
    assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()
    assert signals_of(app, task_id).count("executing") == 1
    assert "recovered" not in signals_of(app, task_id)
    assert app.task_statuses()["canceled"] == 1
