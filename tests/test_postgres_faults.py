"""Faults of the PostgreSQL queue: lock order, failed writes, dropped
connections, a retry's priority, reconciliation after a kill.

Real consumers on the machine's PostgreSQL (a schema per test, see the
``pg`` fixture of tests/test_postgres.py), running tests/pg_faults_app.py,
whose tasks write a ledger of what ran, where and in which order; faults
are the server's own (a trigger that refuses inserts, connections it
terminates) and real signals.
"""
import re
import subprocess
import sys

import pytest

import pg_faults_app
from conftest import scalar, wait_until
from test_delivery import TESTS, kill_group
from test_postgres import pg  # noqa: F401 (a fixture)

BUILD = """
import sys
from hueyscope.queue import make_huey
from hueyscope.settings import Settings
for i in range(int(sys.argv[1])):
    make_huey(Settings.build(), name="pgfaults").storage.close()
"""


@pytest.fixture
def app(pg):  # noqa: F811
    """The ``pg`` fixture, set up for pg_faults_app."""
    pg.env.update(HUEYSCOPE_APP="pg_faults_app:huey",
                  PG_FAILED_ONCE=str(pg.folder / "failed-once.txt"))
    return pg


def consume(cli, *args, name="consumer", **env):
    return cli.start("consume", "--no-periodic", "--max-delay", "0.1",
                     "--health-check-interval", "0.5", "--heartbeat-every", "0.5",
                     *args, name=name, **env)


def run_app(cli, code):
    """Run ``code`` with pg_faults_app imported as ``a``; its stdout."""
    proc = subprocess.run([sys.executable, "-c", "import pg_faults_app as a; " + code],
                          cwd=cli.folder, env=cli.env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def execute(cli, statement):
    """Run ``statement`` (returning no rows) in the test's schema."""
    import psycopg

    with psycopg.connect(cli.env["HUEYSCOPE_QUEUE"], autocommit=True) as conn:
        conn.execute(statement)


def steps(cli, kind):
    """{n: runs} of the ledger's lines of ``kind``."""
    counts = {}
    for k, _, n, _ in pg_faults_app.ledger(cli.ledger):
        if k == kind:
            counts[int(n)] = counts.get(int(n), 0) + 1
    return counts


@pytest.mark.timeout(90)
def test_building_the_huey_while_pipelines_drain_loses_no_step(app):
    """Every consumer start, producer and command builds the Huey: that must
    take no lock the workers of a live queue need, and a step whose next
    step's enqueue failed must keep its lease."""
    count = 400
    run_app(app, "a.pipelines(%d)" % count)
    consumers = [consume(app, "-w", "4", name="first")]
    builders = [subprocess.Popen([sys.executable, "-c", BUILD, "12"], cwd=app.folder,
                                 env=app.env, stderr=subprocess.PIPE, text=True)
                for _ in range(4)]
    wait_until(lambda: len(steps(app, "step2")) >= count // 8, timeout=60,
               message="the drain under way")
    # Consumers starting while others drain build the Huey too.
    consumers += [consume(app, "-w", "2", name=n) for n in ("second", "third")]
    errors = [b.communicate(timeout=60)[1] for b in builders]
    assert [b.returncode for b in builders] == [0] * 4, "\n".join(errors)
    wait_until(lambda: len(steps(app, "step2")) == count or any(
        c.proc.poll() is not None for c in consumers), timeout=60,
        message="every second step to run")
    logs = ""
    for consumer in consumers:
        assert consumer.stop() == 0, consumer.describe()
        logs += consumer.stderr
    assert set(steps(app, "step1")) == set(range(count))
    assert set(steps(app, "step2")) == set(range(count)), "%d pipelines lost" % (
        count - len(steps(app, "step2")))
    assert "deadlock" not in (logs + "".join(errors)).lower()
    assert scalar(app.events, "select count(*) from tasks where "
                  "status = 'not-queued'") == 0
    assert app.sql("select count(*) from hueyscope_lease") == [(0,)]


@pytest.mark.timeout(90)
def test_a_step_whose_next_step_cannot_be_enqueued_keeps_its_lease(app):
    """The queue refuses every insert (a trigger raises) while step 1 of
    three pipelines runs: each step keeps its lease, and once the queue
    takes inserts again, recovery at the consumer's stop enqueues each
    step 2 with step 1's stored result; step 1 never runs twice."""
    run_app(app, "a.pipelines(3)")
    execute(app, "create function refuse() returns trigger language plpgsql "
            "as $$ begin raise exception 'the queue refuses inserts'; end $$")
    execute(app, "create trigger refuse before insert on huey_task "
            "for each row execute function refuse()")
    first = consume(app, "-w", "1", name="first")
    wait_until(lambda: len(steps(app, "step1")) == 3, message="every step 1 to run")
    wait_until(lambda: first.stderr.count("the queue refuses inserts") >= 3,
               message="every step 2's enqueue to fail")
    assert app.sql("select count(*) from hueyscope_lease") == [(3,)]
    execute(app, "drop trigger refuse on huey_task")
    assert first.stop() == 0, first.describe()
    second = consume(app, "-w", "1", name="second")
    wait_until(lambda: len(steps(app, "step2")) == 3, message="every step 2 to run")
    assert second.stop() == 0, second.describe()
    assert steps(app, "step1") == {0: 1, 1: 1, 2: 1}
    assert steps(app, "step2") == {0: 1, 1: 1, 2: 1}
    assert app.sql("select count(*) from hueyscope_lease") == [(0,)]


@pytest.mark.timeout(90)
def test_connections_dropped_mid_drain_lose_no_result(app):
    """The server drops every connection of the consumer, again and again,
    while it drains: each storage call whose connection dropped runs again
    on a new one, so every task's result is stored while it runs."""
    count = 300
    name = app.schema
    app.env["HUEYSCOPE_QUEUE"] += "&application_name=%s" % name
    run_app(app, "[a.plain(i) for i in range(%d)]" % count)
    consumer = consume(app, "-w", "4")
    for share in range(1, 6):
        wait_until(lambda: len(steps(app, "plain")) >= count * share // 8,
                   message="%d/8 of the tasks run" % share)
        # The consumer's connections, once it has opened them again (the
        # shares can come one after another on a fast drain).
        wait_until(lambda: app.sql(
            "select pg_terminate_backend(pid) from pg_stat_activity "
            "where application_name = %s", (name,)),
            message="connections of the consumer to drop")
    wait_until(lambda: len(steps(app, "plain")) == count, message="every task run")
    wait_until(lambda: app.sql("select count(*) from huey_kv")[0][0] >= count
               or consumer.proc.poll() is not None, message=lambda: (
                   "every result stored: %s of %d, leases %s\n%s" % (
                       app.sql("select count(*) from huey_kv")[0][0], count,
                       app.sql("select count(*) from hueyscope_lease")[0][0],
                       consumer.describe())))
    assert consumer.proc.poll() is None, consumer.describe()
    assert app.sql("select count(*) from huey_kv") == [(count,)]
    assert consumer.stop() == 0, consumer.describe()
    assert app.sql("select count(*) from hueyscope_lease") == [(0,)]
    # Recovery, at each health check and at the stop, began on a dropped
    # connection too: it begins again on a new one.
    assert "Recovery failed" not in consumer.stderr


@pytest.mark.timeout(120)
def test_a_recovery_whose_connection_drops_mid_transaction_runs_again(app):
    """Recovery is one transaction; the server ends its connection while it
    waits for the recovery lock (held here): it begins again on a new
    connection and completes, as every storage call does."""
    import psycopg

    from hueyscope.queue.postgres import RECOVERY_LOCK

    run_app(app, "a.huey.storage.close()")  # the tables, made once
    holder = psycopg.connect(app.env["HUEYSCOPE_QUEUE"])  # in a transaction
    try:
        holder.execute(RECOVERY_LOCK)
        mine = holder.info.backend_pid
        recover = app.start("recover", name="recover")

        def waiting():
            return [pid for pid, in app.sql(
                "select pid from pg_stat_activity where wait_event = 'advisory' "
                "and pid != %s and query like %s", (mine, "%pg_advisory_xact_lock%"))]

        [pid] = wait_until(lambda: waiting() or recover.proc.poll() is not None,
                           timeout=60, message="recover to wait for the lock")
        assert app.sql("select pg_terminate_backend(%s)", (pid,)) == [(True,)]
        # Its next attempt waits on a new connection, then gets the lock.
        wait_until(lambda: [p for p in waiting() if p != pid]
                   or recover.proc.poll() is not None, timeout=60,
                   message="recover to wait again on a new connection")
    finally:
        holder.rollback()
        holder.close()
    assert recover.wait(60) == 0, recover.describe()
    assert "attempt 2 of 5" in recover.stderr


# On SQLite, hueyscope's consumer leases a worker's next message ahead, in
# its result's group commit only: never in a write that may enqueue a retry.
@pytest.fixture(params=["postgresql", "sqlite"])
def either(request, cli):
    """pg_faults_app on a PostgreSQL queue (``app``) or on a SQLite file."""
    if request.param == "postgresql":
        return request.getfixturevalue("app")
    cli.env.update(PYTHONPATH=str(TESTS), LEDGER=str(cli.folder / "ledger.txt"),
                   HUEYSCOPE_APP="pg_faults_app:huey",
                   PG_FAILED_ONCE=str(cli.folder / "failed-once.txt"))
    cli.ledger = cli.folder / "ledger.txt"
    return cli


@pytest.mark.timeout(60)
def test_a_retry_runs_before_tasks_of_lower_priority(either):
    """An urgent task that fails once runs again before the queue of
    priority-0 tasks behind it, on a one-worker consumer: the retry's insert
    comes before the worker's next lease."""
    run_app(either, "a.fails_once(); [a.plain(i) for i in range(20)]")
    consumer = consume(either, "-w", "1")
    wait_until(lambda: len(pg_faults_app.ledger(either.ledger)) == 22,
               message="every task to run")
    assert consumer.stop() == 0, consumer.describe()
    order = [(kind, n) for kind, _, n, _ in pg_faults_app.ledger(either.ledger)]
    assert order[:2] == [("urgent", "first"), ("urgent", "retry")], order[:4]


@pytest.mark.timeout(150)
def test_tasks_finished_before_a_sigkill_are_reconciled_complete(app):
    """A consumer killed before its last events reached the store (here,
    none did: its recorder flushes, and its run beats, every 10 minutes)
    leaves finished tasks shown enqueued; the next consumer reads their
    results in the PostgreSQL queue and records them complete."""
    count = 20
    first = consume(app, "-w", "2", "--heartbeat-every", "600", name="first",
                    PG_FLUSH_INTERVAL="600")
    # Its first heartbeat, as it starts, is the last time it writes.
    wait_until(lambda: scalar(app.events, "select count(*) from runs where "
                              "pid = ?", (first.pid,)), message="the first run")
    run_app(app, "[a.plain(i) for i in range(%d)]" % count)
    wait_until(lambda: app.sql("select count(*) from huey_kv") == [(count,)],
               message="every result stored in the queue")
    kill_group(first)
    assert app.task_statuses() == {"enqueued": count}
    second = consume(app, "-w", "1", name="second")
    wait_until(lambda: app.task_statuses() == {"complete": count}, timeout=90,
               message="the finished tasks recorded complete")
    assert second.stop() == 0, second.describe()
    # The outcomes turn quiet over the time the tasks ran: one health check
    # may record some of them and the next the rest.
    recorded = re.findall(r"Recorded (\d+) task\(s\) complete", second.stderr)
    assert sum(map(int, recorded)) == count, second.stderr
    assert "Could not reconcile" not in second.stderr
