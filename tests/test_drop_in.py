"""Drop-in: hueyscope's Huey classes keep huey's contract, under any consumer.

Each case is one that huey's own SqliteHuey passes: immediate mode, bytes
keys, read_periodic, a finished task that never runs again after a graceful
stop (whatever thread ran it, whatever consumer), huey-style signal
handlers on recovered tasks, recovery under huey's own consumers, SIGHUP as
a graceful restart, and ``recover`` with no app. The apps are real
(tests/dropin_app.py, tests/ledger_app.py), the consumers real processes.
"""
import datetime
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import query, scalar, wait_until

TESTS = Path(__file__).parent
HUEY_CONSUMER = str(Path(sys.executable).parent / "huey_consumer")
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


# -- in one process ------------------------------------------------------------

def _leased_sqlite(tmp_path, **kwargs):
    from hueyscope import SqliteHuey

    return SqliteHuey("t", filename=str(tmp_path / "q.db"), **kwargs)


def _at_most_once(tmp_path, **kwargs):
    from hueyscope.queue import DurableSqliteHuey

    return DurableSqliteHuey("t", filename=str(tmp_path / "q.db"), **kwargs)


def _leased_postgres(tmp_path, **kwargs):
    from hueyscope.queue.postgres import LeasedPostgresHuey

    # Immediate mode never opens the database.
    return LeasedPostgresHuey("t", dsn=PG_DSN, **kwargs)


def _attached(tmp_path, **kwargs):
    import hueyscope

    huey = _leased_sqlite(tmp_path, **kwargs)
    hueyscope.attach(huey, events=str(tmp_path / "events.db"))
    return huey


@pytest.mark.timeout(60)
@pytest.mark.parametrize("make", [_leased_sqlite, _at_most_once, _leased_postgres,
                                  _attached])
def test_immediate_mode_runs_each_task_in_the_caller(tmp_path, make):
    huey = make(tmp_path, immediate=True)

    @huey.task()
    def add(a, b):
        return a + b

    @huey.task(retries=1)
    def fails():
        raise ValueError("no")

    assert add(1, 2)() == 3
    # A pipeline, each step run as it is enqueued.
    assert huey.enqueue(add.s(1, 2).then(add, 10)).get() == [3, 13]
    with pytest.raises(Exception):
        fails().get()


@pytest.mark.timeout(60)
def test_immediate_mode_on_the_leased_file_itself(tmp_path):
    huey = _leased_sqlite(tmp_path, immediate=True, immediate_use_memory=False)

    @huey.task()
    def add(a, b):
        return a + b

    assert add(2, 3)() == 5
    assert query(tmp_path / "q.db", "select count(*) from hueyscope_lease") == [(0,)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("make", [_leased_sqlite, _at_most_once])
def test_bytes_keys_are_hueys_keys(tmp_path, make):
    huey = make(tmp_path)
    assert huey.put_if_empty(b"k", "v")
    assert not huey.put_if_empty(b"k", "w")
    assert huey.get(b"k", peek=True) == "v"
    huey.put(b"k2", "x")
    assert huey.delete(b"k2") is True
    assert huey.get(b"k2") is None
    # Lock keys (str) still go through the leased locks, with a holder.
    lock = huey.lock_task("one")
    with lock:
        assert lock.is_locked()
    assert not lock.is_locked()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("make", [_leased_sqlite, _at_most_once])
def test_read_periodic_says_what_is_due_and_enqueue_claims_the_tick(tmp_path, make):
    from huey import crontab

    seen = []

    def build():
        huey = make(tmp_path, utc=False)
        enqueue = huey.enqueue

        def wrapped(task):  # an app's wrapper of enqueue
            seen.append(task.name)
            return enqueue(task)

        huey.enqueue = wrapped

        @huey.periodic_task(crontab(minute="*"))
        def tick():
            pass
        return huey

    one, two = build(), build()
    at = datetime.datetime(2026, 11, 1, 1, 30)
    due = one.read_periodic(at)
    assert [t.name for t in due] == ["tick"]
    assert one.pending_count() == 0  # reading what is due enqueues nothing
    for task in due:
        one.enqueue(task)
    for task in two.read_periodic(at):  # another consumer, the same tick
        assert two.enqueue(task) is None
    assert seen == ["tick", "tick"]
    assert one.pending_count() == 1
    # The hour a fall-back repeats: its second pass is a tick of its own.
    for task in two.read_periodic(at.replace(fold=1)):
        two.enqueue(task)
    assert one.pending_count() == 2


# -- real processes --------------------------------------------------------------

@pytest.fixture
def app(tmp_path):
    """Environment for dropin_app in ``tmp_path``; processes killed at the end."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUEYSCOPE_")}
    env.update(PYTHONPATH=str(TESTS), QUEUE=str(tmp_path / "queue.db"),
               EVENTS=str(tmp_path / "events.db"),
               LEDGER=str(tmp_path / "ledger.txt"), HOLD=str(tmp_path / "go"),
               PYTHONUNBUFFERED="1",
               HUEYSCOPE_QUEUE=str(tmp_path / "queue.db"),
               HUEYSCOPE_EVENTS=str(tmp_path / "events.db"))
    state = type("App", (), {})()
    state.env, state.folder, state.procs = env, tmp_path, []
    state.queue, state.events = tmp_path / "queue.db", tmp_path / "events.db"
    state.ledger = tmp_path / "ledger.txt"
    yield state
    for proc in state.procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def python(app, code, timeout=60):
    """Run ``code`` with dropin_app imported as ``a``, to its end."""
    proc = subprocess.run([sys.executable, "-c", "import dropin_app as a\n" + code],
                          cwd=app.folder, env=app.env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return proc


def start(app, args, name):
    out = open(app.folder / ("%s.log" % name), "w")
    proc = subprocess.Popen(args, cwd=app.folder, env=app.env, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    app.procs.append(proc)
    return proc


def ledger(app, kind):
    """The ledger lines of ``kind`` (start, done, signal), less the kind."""
    try:
        with open(app.ledger) as f:
            lines = [line.split() for line in f if line.strip()]
    except FileNotFoundError:
        return []
    return [words[1:] for words in lines if words[0] == kind]


def runs_of(app, n):
    return sum(1 for words in ledger(app, "start") if words[1] == str(n))


def lease_rows(app):
    return scalar(app.queue, "select count(*) from hueyscope_lease")


def holder_rows(app):
    return scalar(app.queue, "select count(*) from hueyscope_holder")


@pytest.mark.timeout(60)
def test_tasks_dequeued_together_and_run_on_other_threads_settle(app):
    """huey's test_chord_ordering pattern: dequeue several, then execute them
    (here each on a thread of its own); the process exits normally."""
    app.env.pop("HOLD")
    python(app, """
import threading
for n in range(3):
    a.job(n)
tasks = [a.huey.dequeue() for _ in range(3)]
for task in tasks:
    thread = threading.Thread(target=a.huey.execute, args=(task,))
    thread.start()
    thread.join()
""")
    assert [runs_of(app, n) for n in range(3)] == [1, 1, 1]
    assert lease_rows(app) == 0
    assert holder_rows(app) == 0
    assert scalar(app.queue, "select count(*) from task") == 0


@pytest.mark.timeout(60)
def test_a_task_taken_and_never_run_goes_back_at_a_normal_exit(app):
    app.env.pop("HOLD")
    python(app, "a.job(1); a.job(2); a.huey.dequeue()")
    assert lease_rows(app) == 0
    assert scalar(app.queue, "select count(*) from task") == 2


@pytest.mark.timeout(90)
@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_huey_consumer_stopped_mid_task_never_runs_it_again(app, worker_type):
    """SIGINT while a None-returning task runs: it finishes, the consumer
    exits 0, and the next consumer does not run it again."""
    # One worker: once the task is done nothing else writes before the exit.
    args = [HUEY_CONSUMER, "dropin_app.huey", "-w", "1", "-k", worker_type, "-n"]
    python(app, "a.job(1)")
    first = start(app, args, "first")
    wait_until(lambda: runs_of(app, 1) == 1, message="the task to start")
    os.killpg(first.pid, signal.SIGINT)
    # The stop is under way before the task may finish: its worker then
    # takes nothing more (a dequeue would write and settle the lease).
    wait_until(lambda: "Shutting down gracefully" in
               (app.folder / "first.log").read_text(), message="the stop to begin")
    (app.folder / "go").touch()
    assert first.wait(30) == 0
    assert ledger(app, "done") and runs_of(app, 1) == 1
    assert lease_rows(app) == 0, "a finished task is still leased"
    second = start(app, args, "second")
    python(app, "a.job(2)")
    wait_until(lambda: ledger(app, "done")[-1:] and ledger(app, "done")[-1][1] == "2",
               message="the next task to run")
    assert runs_of(app, 1) == 1
    os.killpg(second.pid, signal.SIGINT)
    assert second.wait(30) == 0


THREADED_CONSUMER = """
import os, sys, threading, time
import dropin_app as a
consumer = a.huey.create_consumer(workers=3, periodic=False, initial_delay=0.05,
                                  max_delay=0.1, check_worker_health=True,
                                  health_check_interval=1)
threading.Thread(target=consumer.run, daemon=True).start()
if sys.argv[1] == "die":
    while sum(1 for w in a.lines() if w[0] == "start") < 1:
        time.sleep(0.02)
    os._exit(1)
while len([w for w in a.lines() if w[0] == "done"]) < 3:
    time.sleep(0.02)
consumer.stop(graceful=True)
"""


@pytest.mark.timeout(90)
def test_recovery_under_create_consumer_in_a_thread(app):
    """The notebook's way: a consumer in a thread of the app's process,
    killed with os._exit during three locked jobs, started again the same
    way. Every job runs, the lock is freed, no dead holder stays."""
    python(app, "[a.locked(n) for n in range(3)]")
    died = subprocess.run([sys.executable, "-c", THREADED_CONSUMER, "die"],
                          cwd=app.folder, env=app.env, timeout=60)
    assert died.returncode == 1
    assert lease_rows(app) == 1  # the locked job it was running
    (app.folder / "go").touch()
    again = subprocess.run([sys.executable, "-c", THREADED_CONSUMER, "run"],
                           cwd=app.folder, env=app.env, timeout=60,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert sorted(w[1] for w in ledger(app, "done")) == ["0", "1", "2"]
    assert lease_rows(app) == 0
    assert scalar(app.queue, "select count(*) from hueyscope_lock") == 0
    assert holder_rows(app) == 0
    # The handler written as huey documents it saw the recovery.
    assert [w[0] for w in ledger(app, "signal")].count("recovered") == 1
    assert "TypeError" not in again.stderr


@pytest.mark.timeout(90)
def test_recover_without_app_recovers_every_queue_of_the_file(app):
    """The queue file holds the app's queue ('dropin'); recover is run with
    no --app, as an operator would, with a dead holder's lease in it."""
    python(app, "a.job(1); a.huey.dequeue(); import os; os._exit(0)")
    assert lease_rows(app) == 1
    result = subprocess.run(
        [str(Path(sys.executable).parent / "hueyscope"), "recover"],
        cwd=app.folder, env=app.env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "queue dropin:" in result.stdout
    assert "1 requeued" in result.stdout, result.stdout
    assert lease_rows(app) == 0
    assert scalar(app.queue, "select count(*) from task where queue = 'dropin'") == 1


@pytest.mark.timeout(120)
def test_sighup_restarts_hueyscope_consume_gracefully(cli):
    """huey's SIGHUP: the running task finishes, the run is closed
    ('restart'), and the consumer starts again in the same process."""
    import ledger_app

    cli.env.update(PYTHONPATH=str(TESTS), LEDGER=str(cli.folder / "ledger.txt"),
                   HUEYSCOPE_APP="ledger_app:huey")
    subprocess.run([sys.executable, "-c", "import ledger_app as a; a.work(1, 2)"],
                   cwd=cli.folder, env=cli.env, check=True, timeout=60)
    consumer = cli.start("consume", "--no-periodic", "--max-delay", "0.1",
                         "--heartbeat-every", "0.5", name="consumer")
    ledger_path = cli.folder / "ledger.txt"
    wait_until(lambda: ledger_app.starts(ledger_path), message="the task to start")
    consumer.send(signal.SIGHUP)
    wait_until(lambda: query(cli.events, "select count(*) from runs where role = "
                             "'consumer' and stopped is null") == [(1,)]
               and query(cli.events, "select stop_reason from runs where role = "
                         "'consumer' and stopped is not null") == [("restart",)],
               message="the run closed as restart and a new one begun",
               timeout=60)
    assert consumer.proc.poll() is None, consumer.describe()
    done = [w for w in ledger_app.ledger(ledger_path) if w[0] == "done"]
    assert len(done) == 1  # the task finished, once
    pids = {row[0] for row in query(cli.events, "select pid from runs where "
                                    "role = 'consumer'")}
    assert pids == {consumer.pid}
    subprocess.run([sys.executable, "-c", "import ledger_app as a; a.work(2)"],
                   cwd=cli.folder, env=cli.env, check=True, timeout=60)
    wait_until(lambda: len([w for w in ledger_app.ledger(ledger_path)
                            if w[0] == "done"]) == 2, message="work after restart")
    assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()
    assert len([w for w in ledger_app.ledger(ledger_path) if w[0] == "start"]) == 2


@pytest.mark.timeout(90)
def test_a_retry_keeps_its_priority(app):
    """A priority-100 task fails once: its retry runs before the priority-0
    tasks queued before it failed (one worker, so the order is the queue's)."""
    app.env.pop("HOLD")
    python(app, "a.urgent(); [a.job(n) for n in range(5)]")
    consumer = start(app, [str(Path(sys.executable).parent / "hueyscope"), "consume",
                           "--app", "dropin_app:huey", "-w", "1", "--no-periodic",
                           "--max-delay", "0.1"], "consumer")
    wait_until(lambda: len(ledger(app, "done")) == 6, message="every task to finish")
    order = [words[1] for words in ledger(app, "start")]
    assert order == ["urgent", "urgent", "0", "1", "2", "3", "4"], order
    os.killpg(consumer.pid, signal.SIGTERM)
    assert consumer.wait(30) == 0
