"""The same tasks on PostgreSQL: leased, recovered after a kill, periodic once a tick.

Each test gets a schema of its own in the machine's PostgreSQL (database
``test``), named in the DSN's search_path and dropped afterwards. The event
store stays a local SQLite file; only --queue changes. Consumers run
tests/ledger_app.py, whose ledger says which task ran, how often, where.
"""
import json
import os
import subprocess
import sys
import uuid

import pytest

import ledger_app
from conftest import HUEYSCOPE, query, require_server, scalar, wait_until
from test_delivery import TESTS, consume, events, kill_group

psycopg = pytest.importorskip("psycopg")
SERVER = os.environ.get("HUEYSCOPE_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test")


@pytest.fixture
def pg(cli):
    """The ``cli`` fixture on a PostgreSQL queue in a fresh schema."""
    schema = "hs_" + uuid.uuid4().hex[:12]
    try:
        admin = psycopg.connect(SERVER, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        require_server("PostgreSQL", SERVER, exc)
    admin.execute("create schema %s" % schema)
    dsn = "%s?options=-csearch_path%%3D%s" % (SERVER, schema)
    cli.env.update(PYTHONPATH=str(TESTS), LEDGER=str(cli.folder / "ledger.txt"),
                   HUEYSCOPE_APP="ledger_app:huey", HUEYSCOPE_QUEUE=dsn)
    cli.ledger = cli.folder / "ledger.txt"
    cli.schema = schema

    def sql(statement, params=()):
        admin.execute("set search_path = %s" % schema)
        return admin.execute(statement, params).fetchall()

    cli.sql = sql
    yield cli
    cli.close()
    admin.execute("drop schema %s cascade" % schema)
    admin.close()


def produce(cli, count):
    return subprocess.Popen(
        [sys.executable, "-c", "import ledger_app as a; a.enqueue(%d)" % count],
        cwd=cli.folder, env=cli.env)


def results(cli):
    return cli.sql("select count(*) from huey_kv where key not like '%%.lock.%%'")[0][0]


@pytest.mark.timeout(240)
def test_two_consumers_two_producers_10000_tasks_none_lost_none_twice(pg):
    total = 10_000
    producers = [produce(pg, total // 2) for _ in range(2)]
    consumers = [consume(pg, "-w", "4", name=n) for n in ("one", "two")]
    for p in producers:
        assert p.wait(120) == 0
    wait_until(lambda: results(pg) == total, timeout=200, message="every result")
    for consumer in consumers:
        assert consumer.stop() == 0, consumer.describe()
    starts = ledger_app.starts(pg.ledger)
    assert len(starts) == total and set(starts.values()) == {1}
    assert pg.sql("select count(*) from hueyscope_lease") == [(0,)]
    assert pg.sql("select count(*) from huey_task") == [(0,)]
    assert scalar(pg.events, "select count(*) from tasks where status = 'complete'") == total
    assert query(pg.events, "select distinct backend from runs where role = 'consumer'") == [
        ("postgresql",)]


@pytest.mark.timeout(120)
def test_a_consumer_killed_mid_task_has_its_tasks_recovered(pg):
    assert produce(pg, 40).wait(60) == 0
    subprocess.run([sys.executable, "-c", "import ledger_app as a; a.enqueue(40, 0.3)"],
                   cwd=pg.folder, env=pg.env, check=True, timeout=60)
    first = consume(pg, "-w", "4", name="first")
    wait_until(lambda: len(ledger_app.starts(pg.ledger)) >= 50,
               message="the slow tasks to start")
    kill_group(first)
    leased = {bytes(d) for d, in pg.sql("select data from hueyscope_lease")}
    assert leased, "the kill left nothing leased"
    status = pg.run("status", "--json")
    assert status.returncode == 0, status.stderr
    held = json.loads(status.stdout)["queues"]["ledger"]["leases"]
    assert sum(h["tasks"] for h in held) == len(leased)
    assert not any(h["alive"] for h in held)
    second = consume(pg, "-w", "4", name="second")
    wait_until(lambda: results(pg) == 80, timeout=60, message="every result")
    assert second.stop() == 0, second.describe()
    starts = ledger_app.starts(pg.ledger)
    assert len(starts) == 80
    twice = {t for t, n in starts.items() if n > 1}
    assert len(twice) == len(leased) and max(starts.values()) == 2
    recovered = events(pg, "recovered")
    assert {r[0] for r in recovered} == twice
    assert pg.sql("select count(*) from hueyscope_lease") == [(0,)]


@pytest.mark.timeout(120)
def test_two_consumers_run_a_periodic_task_once_per_tick(pg):
    import time

    pg.env["LEDGER_PERIODIC"] = "1"
    wait_until(lambda: time.gmtime().tm_sec < 40, timeout=25,
               message="the first 40 seconds of a minute")
    minute = time.gmtime().tm_min
    consumers = [consume(pg, "-w", "2", "--periodic", name=n) for n in ("a", "b")]
    wait_until(lambda: scalar(pg.events, "select count(*) from runs where "
                              "role = 'consumer' and heartbeat > started") == 2,
               message="both consumers up and beating")
    wait_until(lambda: any(k == "periodic" for k, *_ in ledger_app.ledger(pg.ledger)),
               message="the periodic task to run")
    for consumer in consumers:
        assert consumer.stop() == 0, consumer.describe()
    assert time.gmtime().tm_min == minute, "the test crossed a minute"
    assert [k for k, *_ in ledger_app.ledger(pg.ledger)].count("periodic") == 1
    assert len(pg.sql("select * from huey_periodic_tick")) == 1


@pytest.mark.parametrize("queue", [
    "postgresql://127.0.0.1:1/test", "postgresql://127.0.0.1:5432/no_such_db"])
def test_an_unreachable_queue_is_one_line_and_exit_2(cli, queue):
    from conftest import assert_one_line_error

    result = cli.run("status", HUEYSCOPE_QUEUE=queue)
    assert_one_line_error(result)
    assert "cannot open queue" in result.stderr


@pytest.mark.timeout(180)
def test_the_demo_runs_on_postgresql_and_again_on_its_own_queue(pg):
    demo = pg.run("demo", "--queue", pg.env["HUEYSCOPE_QUEUE"], "--dir", "tour",
                  timeout=170)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "UNEXPECTED" not in demo.stdout
    assert not (pg.folder / "tour" / "queue.db").exists()
    assert query(pg.folder / "tour" / "events.db",
                 "select distinct backend from runs where role = 'consumer'") == [
        ("postgresql",)]
    # A queue the demo used carries its mark: the next demo empties it.
    again = pg.run("demo", "--queue", pg.env["HUEYSCOPE_QUEUE"], "--dir", "tour",
                   timeout=170)
    assert again.returncode == 0, again.stdout[-3000:]


@pytest.mark.parametrize("queue", ["foreign", "redis://127.0.0.1:6379/14"])
def test_the_demo_refuses_someone_elses_queue(pg, queue):
    from conftest import assert_one_line_error

    if queue == "foreign":
        assert produce(pg, 3).wait(60) == 0
        queue = pg.env["HUEYSCOPE_QUEUE"]
    # The demo's own queue name ("hueyscope") holds 3 tasks of another app.
    pg.env["HUEYSCOPE_APP"] = "hueyscope.demo_tasks:huey"
    if queue.startswith("postgresql"):
        subprocess.run([sys.executable, "-c", "from hueyscope.demo_tasks import "
                        "quick_add; [quick_add(i, i) for i in range(3)]"],
                       cwd=pg.folder, env=pg.env, check=True, timeout=60)
    result = pg.run("demo", "--queue", queue, "--dir", "tour")
    assert_one_line_error(result)
    if queue.startswith("postgresql"):
        assert "not empty" in result.stderr
        assert pg.sql("select count(*) from huey_task where queue = 'hueyscope'") == [(3,)]
    else:
        assert "postgresql://" in result.stderr


@pytest.mark.timeout(120)
def test_one_report_counts_two_hosts_exactly(pg):
    """Two consumers on two hosts (UTS namespaces: each its own hostname)
    share the queue and each writes its own event store; the report of both
    stores tells the hosts apart and counts every task once."""
    if subprocess.run(["unshare", "--uts", "true"], capture_output=True).returncode:
        pytest.skip("cannot make a UTS namespace here (needs root)")
    total = 400
    assert produce(pg, total).wait(60) == 0
    stores = {}
    consumers = []
    for host in ("host-a", "host-b"):
        stores[host] = pg.folder / ("%s.db" % host)
        env = dict(pg.env, HUEYSCOPE_EVENTS=str(stores[host]))
        command = ("hostname %s && exec %s consume --no-periodic -w 2 "
                   "--max-delay 0.1 --heartbeat-every 0.5" % (
                       host, HUEYSCOPE))
        proc = subprocess.Popen(["unshare", "--uts", "sh", "-c", command],
                                cwd=pg.folder, env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        consumers.append(proc)
    try:
        wait_until(lambda: results(pg) == total, timeout=90, message="every result")
    finally:
        for proc in consumers:
            os.killpg(proc.pid, 15)
        codes = [proc.wait(30) for proc in consumers]
    assert codes == [0, 0]
    by_pid = {}
    for kind, task_id, n, pid in ledger_app.ledger(pg.ledger):
        if kind == "done":
            by_pid[int(pid)] = by_pid.get(int(pid), 0) + 1
    per_store = {host: scalar(path, "select count(*) from tasks where status = "
                              "'complete'") for host, path in stores.items()}
    assert sum(per_store.values()) == total and all(per_store.values())
    sources = [str(stores["host-a"]), str(stores["host-b"]), str(pg.events)]
    report = pg.run("report", *sources)
    assert report.returncode == 0, report.stderr
    from hueyscope.reports.store import Store

    store = Store(sources)
    hosts = {r["host"]: r["n"] for r in store.rows(
        "select r.host, count(*) as n from events e join runs r "
        "on r.id = e.run_id and r._db = e._db where e.signal = 'complete' "
        "group by r.host")}
    assert hosts == {"host-a": per_store["host-a"], "host-b": per_store["host-b"]}
    assert sorted(by_pid.values()) == sorted(per_store.values())
    runs_page = (pg.site / "runs.html").read_text()
    assert "host-a" in runs_page and "host-b" in runs_page
    index = (pg.site / "index.html").read_text()
    assert ">%s<" % "{:,}".format(total) in index


@pytest.mark.timeout(120)
def test_a_task_failed_for_good_is_retried_from_the_failed_set(pg):
    pg.env.update(HUEYSCOPE_APP="truth_app:huey",
                  TRUTH_FIXED=str(pg.folder / "fixed.txt"))
    task_id = subprocess.run(
        [sys.executable, "-c", "import truth_app as a; print(a.fails_until_fixed().id)"],
        cwd=pg.folder, env=pg.env, capture_output=True, text=True, check=True,
        timeout=60).stdout.strip()
    consumer = consume(pg, "-w", "2")

    def status():
        return scalar(pg.events, "select status from tasks where task_id = ?",
                      (task_id,))

    wait_until(lambda: status() == "failed", message="the task to fail for good")
    listed = json.loads(pg.run("failed", "--json").stdout)
    assert [(e["task_id"], e["kind"]) for e in listed] == [(task_id, "failed")]
    (pg.folder / "fixed.txt").write_text("")
    assert pg.run("retry", str(listed[0]["id"])).returncode == 0
    wait_until(lambda: status() == "complete", message="the retried task to complete")
    assert consumer.stop() == 0, consumer.describe()
    assert pg.sql("select count(*) from hueyscope_dead_letter") == [(0,)]


@pytest.mark.timeout(60)
def test_a_build_in_one_schema_never_waits_for_another_schemas():
    """The schema and recovery locks are the schema's, not the database's:
    a builder stuck holding one in a schema (a hung process of another app
    or test) does not stop a Huey in another schema from being built or
    recovering."""
    from conftest import postgres_schema
    from hueyscope.queue.postgres import RECOVERY_LOCK, SCHEMA_LOCK, make_postgres_huey
    from hueyscope.queue.recovery import recover

    with postgres_schema() as (_, _, stuck_url), postgres_schema() as (_, _, url):
        holder = psycopg.connect(stuck_url)  # a transaction left open
        try:
            holder.execute(SCHEMA_LOCK)
            holder.execute(RECOVERY_LOCK)
            huey = make_postgres_huey("other", url)
            try:
                recover(huey)
            finally:
                huey.storage.close()
        finally:
            holder.close()
