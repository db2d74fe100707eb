"""At-least-once delivery on SQLite: real consumers killed with real signals.

Every test runs ``hueyscope consume --app ledger_app:huey`` processes on one
queue file; the tasks write a ledger (tests/ledger_app.py), so a test knows
exactly which task ran, how often and in which process. After a kill the
queue file itself says which tasks were leased (taken, no outcome stored):
those, and only those, may run twice.
"""
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ledger_app
from conftest import query, scalar, wait_until

TESTS = Path(__file__).parent


@pytest.fixture
def app(cli):
    """The ``cli`` fixture, set up for ledger_app."""
    cli.env.update(PYTHONPATH=str(TESTS), LEDGER=str(cli.folder / "ledger.txt"),
                   HUEYSCOPE_APP="ledger_app:huey")
    cli.ledger = cli.folder / "ledger.txt"
    return cli


def enqueue(cli, code):
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


def results(cli):
    return scalar(cli.queue, "select count(*) from kv where queue = 'ledger' "
                  "and key not like '%.lock.%'") or 0


def leased_ids(cli):
    """Task ids of the messages leased in the queue file right now."""
    from huey.serializer import Serializer

    rows = query(cli.queue, "select data from hueyscope_lease")
    return {Serializer().deserialize(data).id for data, in rows}


def events(cli, signal_name):
    return query(cli.events, "select task_id, run_id, error from events "
                 "where signal = ?", (signal_name,))


def integrity(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("pragma integrity_check").fetchone()[0]
    finally:
        conn.close()


def started_by(cli, pids):
    return {task_id for kind, task_id, n, pid in ledger_app.ledger(cli.ledger)
            if kind == "start" and int(pid) in pids}


def dump(path):
    """The content of a SQLite file, as SQL (a checkpoint changes the bytes)."""
    conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def _processes():
    """(pid, state, ppid, process group) of every process."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            yield int(entry), fields[0], int(fields[1]), int(fields[2])


def children(pid):
    """Live pids whose parent is ``pid``."""
    return [p for p, state, ppid, _ in _processes() if ppid == pid and state != "Z"]


def group(pgid):
    """Live pids of process group ``pgid``.

    A SIGKILLed process can finish the system call it is in (a write, a
    commit) after its parent was reaped: only an empty group is a settled one.
    """
    return [p for p, state, _, g in _processes() if g == pgid and state != "Z"]


def kill_group(started):
    os.killpg(started.pid, signal.SIGKILL)
    started.wait(10)
    wait_until(lambda: not group(started.pid), timeout=10,
               message="every process of the group gone")


# -- a killed consumer's tasks run again; nothing else does -----------------

@pytest.mark.timeout(120)
@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_sigkill_mid_task_then_restart_runs_each_killed_task_again(app, worker_type):
    ids = enqueue(app, "print(' '.join(a.enqueue(100, 0.05)))").split()
    first = consume(app, "-w", "4", "-k", worker_type, name="first")
    wait_until(lambda: scalar(app.events, "select id from runs where pid = ?",
                              (first.pid,)), message="the consumer's run on record")
    wait_until(lambda: len(ledger_app.starts(app.ledger)) >= 30, timeout=60,
               message="30 tasks started")
    kill_group(first)
    killed = leased_ids(app)
    ran_before = set(ledger_app.starts(app.ledger))
    assert killed, "the kill landed between tasks; nothing was leased"
    assert integrity(app.queue) == "ok"
    assert integrity(app.events) == "ok"

    second = consume(app, "-w", "4", "-k", worker_type, name="second")
    wait_until(lambda: results(app) == 100, timeout=60, message="100 results")
    assert second.stop() == 0, second.describe()

    starts = ledger_app.starts(app.ledger)
    assert set(starts) == set(ids)
    twice = {t for t, n in starts.items() if n == 2}
    # Killed mid-task: leased, and started before the kill. A leased task
    # that never started (taken for a waiting worker) runs once.
    assert twice == killed & ran_before
    assert max(starts.values()) == 2
    recovered = events(app, "recovered")
    assert {task_id for task_id, _, _ in recovered} == killed
    assert len(recovered) == len(killed)
    old_run = scalar(app.events, "select id from runs where pid = ?", (first.pid,))
    assert old_run, query(app.events, "select id, pid, role from runs")
    assert {run for _, run, _ in recovered} == {old_run}
    assert all("pid %d" % first.pid in error or "is gone" in error
               for _, _, error in recovered)
    assert scalar(app.queue, "select count(*) from hueyscope_lease") == 0
    # The recovered tasks ran to the end, on record; tasks that completed in
    # the last flush interval before the kill (results in the queue, events
    # lost) were reconciled once their rows had been quiet for 10 s.
    statuses = dict(query(app.events, "select task_id, status from tasks"))
    assert {statuses[t] for t in killed} == {"complete"}
    shown_in_report_and_datasette(app, old_run, killed)
    third = consume(app, "-w", "1", name="third")
    wait_until(lambda: scalar(app.events, "select id from runs where pid = ?",
                              (third.pid,)), message="the third consumer's run")
    wait_until(lambda: app.task_statuses() == {"complete": 100}, timeout=40,
               message="every task complete in the store")
    assert third.stop() == 0
    assert scalar(app.events, "select count(*) from events where signal = "
                  "'complete'") == 100  # none twice


def shown_in_report_and_datasette(app, dead_run, recovered):
    """The dead run's page and the canned query list what was recovered."""
    from browse_helpers import rows
    from hueyscope.browse.app import make_datasette

    built = app.run("report")
    assert built.returncode == 0, built.stderr
    pages = [p for p in (app.site / "runs").glob("*.html")
             if dead_run in p.read_text()]
    page = next(p.read_text() for p in pages if "<code>%s</code>" % dead_run
                in p.read_text())
    section = page.split("Recovered after it died", 1)[1]
    assert section.count(">recovered<") == len(recovered)
    for task_id in recovered:
        assert task_id[:8] in section
    found = rows(make_datasette([app.events]), "events", "recovered_and_lost",
                 run_id=dead_run)
    assert {r["task_id"] for r in found} == recovered
    assert {r["status"] for r in found} == {"complete"}


@pytest.mark.timeout(60)
def test_sigkill_of_one_process_worker_is_recovered_while_the_consumer_runs(app):
    task_id = enqueue(app, "print(a.work(1, 2.0).id)").strip()
    consumer = consume(app, "-w", "2", "-k", "process")
    line = wait_until(lambda: [e for e in ledger_app.ledger(app.ledger)
                               if e[0] == "start"], message="the task to start")
    worker_pid = int(line[0][3])
    assert worker_pid != consumer.pid
    os.kill(worker_pid, signal.SIGKILL)
    wait_until(lambda: results(app) == 1, timeout=30, message="the task to finish")
    assert consumer.proc.poll() is None, consumer.describe()
    runs = [e for e in ledger_app.ledger(app.ledger) if e[0] == "start"]
    assert [e[1] for e in runs] == [task_id, task_id]
    assert int(runs[1][3]) != worker_pid
    wait_until(lambda: events(app, "recovered"), message="the recovered event")
    assert consumer.stop() == 0


@pytest.mark.timeout(60)
def test_worker_processes_die_with_their_parent(app):
    enqueue(app, "a.work(1, 30); a.work(2, 30)")
    first = consume(app, "-w", "2", "-k", "process", name="first")
    wait_until(lambda: len(ledger_app.starts(app.ledger)) == 2,
               message="both tasks running")
    workers = children(first.pid)
    assert len(workers) >= 2
    first.send(signal.SIGKILL)  # the parent only, not its group
    first.wait(10)
    wait_until(lambda: not any(Path("/proc/%d" % p).exists() for p in workers),
               timeout=5, message="the worker processes to die with their parent")
    enqueue(app, "")
    second = consume(app, "-w", "2", name="second")
    wait_until(lambda: len(events(app, "recovered")) == 2, timeout=30,
               message="both tasks recovered")
    wait_until(lambda: len(ledger_app.starts(app.ledger)) == 2 and
               sum(ledger_app.starts(app.ledger).values()) == 4,
               message="both tasks running again")
    second.kill()


# -- locks --------------------------------------------------------------------

@pytest.mark.timeout(90)
def test_a_dead_holders_lock_is_freed_and_a_live_holders_never(app):
    enqueue(app, "a.locked(1, 60)")
    first = consume(app, "-w", "2", name="first")
    wait_until(lambda: ledger_app.starts(app.ledger), message="the locked task to start")
    # A second live consumer: its start-up recovery must leave the lock alone.
    second = consume(app, "-w", "2", name="second")
    wait_until(lambda: "hueyscope consumer" in second.stderr, message="second up")
    enqueue(app, "a.locked(2, 0)")
    wait_until(lambda: events(app, "locked"), timeout=30,
               message="the second locked task to find the lock held")
    assert len(ledger_app.starts(app.ledger)) == 1
    assert scalar(app.queue, "select count(*) from kv where key like '%.lock.%'") == 1
    assert second.stop() == 0

    first.send(signal.SIGKILL)
    first.wait(10)
    held = query(app.queue, "select key from kv where key like '%.lock.exclusive'")
    assert held, "the killed consumer's lock is still held"
    third = consume(app, "-w", "1", name="third")
    # The killed job is put back on the queue and takes the freed lock.
    wait_until(lambda: any(e[0] == "done" and e[2] == "1"
                           for e in ledger_app.ledger(app.ledger)),
               timeout=30, message="the killed locked job to run again")
    enqueue(app, "a.locked(3, 0)")
    wait_until(lambda: any(e[0] == "done" and e[2] == "3"
                           for e in ledger_app.ledger(app.ledger)),
               timeout=30, message="the next locked job to run")
    # Recorded by third's writer on its own time: waited for, then exactly one.
    wait_until(lambda: events(app, "recovered"), message="the recovery on record")
    assert "Freed lock exclusive" in third.stderr
    assert third.stop(signal.SIGINT) in (0, 1)
    assert len(events(app, "recovered")) == 1


# -- poison tasks and shutdown ------------------------------------------------

@pytest.mark.timeout(90)
def test_a_task_that_kills_its_worker_is_parked_and_the_consumer_stays_up(app):
    poison = enqueue(app, "print(a.kill_own_worker().id)").strip()
    consumer = consume(app, "-w", "1", "-k", "process", "--max-recoveries", "2")
    wait_until(lambda: events(app, "lost"), timeout=60, message="the lost event")
    assert ledger_app.starts(app.ledger) == {poison: 3}
    parked = query(app.queue, "select task_id, task, recoveries, reason "
                   "from hueyscope_dead_letter")
    assert [(p[0], p[1], p[2]) for p in parked] == [
        (poison, "ledger_app.kill_own_worker", 2)]
    assert "recovered 2 times (max 2)" in parked[0][3]
    # The consumer is healthy: it runs the next task.
    enqueue(app, "a.work(7)")
    wait_until(lambda: results(app) == 1, timeout=30, message="a later task")
    assert consumer.proc.poll() is None
    assert consumer.stop() == 0
    assert app.task_statuses().get("lost") == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_a_task_interrupted_by_the_shutdown_timeout_runs_again(app, worker_type):
    task_id = enqueue(app, "print(a.work(1, 3.0).id)").strip()
    first = consume(app, "-w", "1", "-k", worker_type, "--shutdown-timeout", "0.5",
                    name="first")
    wait_until(lambda: ledger_app.starts(app.ledger), message="the task to start")
    assert first.stop() == 1  # interrupted
    assert scalar(app.queue, "select count(*) from task") == 1
    second = consume(app, "-w", "1", name="second")
    wait_until(lambda: results(app) == 1, timeout=30, message="the task to finish")
    assert second.stop() == 0
    assert ledger_app.starts(app.ledger) == {task_id: 2}
    # Put back by its own consumer on the way out: no poison count.
    assert scalar(app.queue, "select count(*) from hueyscope_recoveries") == 0


# -- many consumers ------------------------------------------------------------

@pytest.mark.timeout(300)
@pytest.mark.parametrize("kill", [False, True])
def test_two_consumers_two_producers_20000_tasks(app, kill):
    total = 20000
    producers = [subprocess.Popen(
        [sys.executable, "-c", "import ledger_app as a; a.enqueue(%d)" % (total // 2)],
        cwd=app.folder, env=app.env) for _ in range(2)]
    one = consume(app, "-w", "4", name="one")
    two = consume(app, "-w", "4", name="two")
    killed = set()
    if kill:
        wait_until(lambda: results(app) >= total // 4, timeout=120,
                   message="a quarter done")
        # What it holds, read while it is stopped: once it is dead, the
        # other consumer's health check may put it back before we look.
        os.killpg(one.pid, signal.SIGSTOP)
        killed = leased_ids(app)
        kill_group(one)
        one = consume(app, "-w", "4", name="one-again")
    for p in producers:
        assert p.wait(120) == 0
    wait_until(lambda: results(app) == total, timeout=240, message="every result")
    assert one.stop() == 0 and two.stop() == 0
    starts = ledger_app.starts(app.ledger)
    assert len(starts) == total
    twice = {t for t, n in starts.items() if n > 1}
    assert twice <= killed
    if not kill:
        assert not twice
    assert max(starts.values()) <= 2
    assert scalar(app.queue, "select count(*) from hueyscope_lease") == 0


@pytest.mark.timeout(600)
def test_soak_100000_tasks_results_leases_and_events_agree(app):
    total = 100_000
    app.env["HUEYSCOPE_DURABILITY"] = "normal"
    enqueue(app, "[a.work(i) for i in range(%d)]" % total)
    consumer = consume(app, "-w", "4", "--heartbeat-every", "2")
    wait_until(lambda: results(app) == total, timeout=500, interval=1,
               message="100,000 results")
    assert consumer.stop() == 0
    assert scalar(app.queue, "select count(*) from hueyscope_lease") == 0
    assert scalar(app.queue, "select count(*) from task") == 0
    counts = dict(query(app.events, "select signal, count(*) from events "
                        "group by signal"))
    assert counts == {"enqueued": total, "executing": total, "complete": total}
    assert app.task_statuses() == {"complete": total}
    assert len(ledger_app.starts(app.ledger)) == total


# -- by hand: status and recover ----------------------------------------------

@pytest.mark.timeout(60)
def test_status_and_recover_show_and_move_what_a_dead_consumer_left(app):
    import json

    enqueue(app, "a.locked(1, 30); a.work(2, 30)")
    first = consume(app, "-w", "2", name="first")
    wait_until(lambda: len(ledger_app.starts(app.ledger)) == 2,
               message="both tasks running")
    live = json.loads(app.run("status", "--json").stdout)["queues"]["ledger"]
    assert [(h["pid"], h["alive"], h["tasks"]) for h in live["leases"]] == [
        (first.pid, True, 2)]
    assert [(h["lock"], h["pid"], h["alive"]) for h in live["lock_holders"]] == [
        ("exclusive", first.pid, True)]
    kill_group(first)

    text = app.run("status").stdout
    assert "leased          2" in text
    assert "pid %d on" % first.pid in text and "DEAD: pid %d" % first.pid in text
    assert "lock exclusive held" in text
    before = dump(app.queue)
    dry = app.run("recover", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("would requeue") == 2
    assert "would free lock exclusive" in dry.stdout
    assert "dry run: 2 requeued, 0 parked, 0 settled, 1 lock(s) freed" in dry.stdout
    assert dump(app.queue) == before
    assert not events(app, "recovered")

    done = app.run("recover")
    assert done.returncode == 0, done.stderr
    assert "2 requeued, 0 parked, 0 settled, 1 lock(s) freed" in done.stdout
    after = json.loads(app.run("status", "--json").stdout)["queues"]["ledger"]
    assert (after["pending"], after["leases"], after["locks"]) == (2, [], [])
    assert len(events(app, "recovered")) == 2
    again = app.run("recover")
    assert "0 requeued" in again.stdout and "no dead holder" in again.stdout


@pytest.mark.timeout(60)
def test_recovery_works_under_the_stock_huey_consumer(app):
    stock = str(Path(sys.executable).parent / "huey_consumer")
    enqueue(app, "a.locked(1, 30)")  # sleeps on its first run only
    env = dict(app.env)
    proc = subprocess.Popen([stock, "ledger_app.huey", "-w", "2"], cwd=app.folder,
                            env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: ledger_app.starts(app.ledger), message="the task to start")
        assert leased_ids(app)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        wait_until(lambda: not group(proc.pid), message="the group gone")
        proc = subprocess.Popen([stock, "ledger_app.huey", "-w", "2"], cwd=app.folder,
                                env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        # The restarted huey_consumer recovers at its first dequeue: the
        # task runs again, its lock freed, and the dead holder is gone.
        wait_until(lambda: results(app) == 1, message="the task to run again")
        wait_until(lambda: len(events(app, "recovered")) == 1,
                   message="the recovery on record")
        assert "no dead holder" in app.run("recover", "--dry-run").stdout
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.mark.timeout(60)
def test_at_most_once_is_hueys_own_dequeue(app):
    """--delivery at-most-once: the killed task is gone, as with stock huey."""
    app.env["HUEYSCOPE_DELIVERY"] = "at-most-once"
    enqueue(app, "a.work(1, 30)")
    first = consume(app, "-w", "1", name="first")
    wait_until(lambda: ledger_app.starts(app.ledger), message="the task to start")
    assert scalar(app.queue, "select count(*) from task") == 0
    kill_group(first)
    assert query(app.queue, "select name from sqlite_master "
                 "where name = 'hueyscope_lease'") == []
    recovered = app.run("recover")
    assert recovered.returncode == 2
    assert "recover needs at-least-once delivery" in recovered.stderr


@pytest.mark.timeout(60)
def test_a_task_the_consumer_does_not_have_is_parked_and_recorded(app):
    producer = dict(app.env, LEDGER_EXTRA_TASK="1")
    proc = subprocess.run(
        [sys.executable, "-c", "import ledger_app as a; "
         "print(a.only_in_the_producer().id); a.work(1)"],
        cwd=app.folder, env=producer, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    unknown = proc.stdout.strip()
    consumer = consume(app, "-w", "1")
    wait_until(lambda: results(app) == 1, message="the known task to run")
    wait_until(lambda: events(app, "dropped"), message="the dropped event")
    assert consumer.stop() == 0
    parked = query(app.queue, "select task_id, task, reason from hueyscope_dead_letter")
    assert [(p[0], p[1]) for p in parked] == [
        (unknown, "ledger_app.only_in_the_producer")]
    assert "not found in TaskRegistry" in parked[0][2]
    assert scalar(app.events, "select status from tasks where task_id = ?",
                  (unknown,)) == "dropped"
    assert "Traceback" not in consumer.stderr
    assert "Parked a message this consumer cannot run" in consumer.stderr


@pytest.mark.timeout(60)
def test_stock_huey_consumer_runs_heartbeat_while_a_long_task_runs(app):
    stock = str(Path(sys.executable).parent / "huey_consumer")
    enqueue(app, "a.work(1, 8)")
    proc = subprocess.Popen([stock, "ledger_app.huey", "-w", "1"], cwd=app.folder,
                            env=app.env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: ledger_app.starts(app.ledger), message="the task to start")
        started = time.time()
        wait_until(lambda: (scalar(app.events, "select max(heartbeat) from runs "
                                   "where role = 'consumer'") or 0) > started + 4,
                   timeout=20, message="a heartbeat during the task")
        assert not any(e[0] == "done" for e in ledger_app.ledger(app.ledger))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
