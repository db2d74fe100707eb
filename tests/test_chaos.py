"""Chaos soak: consumers SIGKILLed at random while producers enqueue, on each engine.

Three ``hueyscope consume --app chaos_app:huey`` processes share one queue
(two with thread workers, one with process workers) while two producer
processes enqueue a seeded mix of tasks (tests/chaos_app.py): plain tasks,
tasks that fail once and are retried through the schedule, two-step
pipelines, a ``lock_task``-protected task and a periodic task every minute.
Every few seconds (a seeded random interval) a consumer's whole process
group, or one worker process of the process-worker consumer, is SIGKILLed;
a killed consumer is restarted at once. After about 40 s the kills stop,
the consumers are restarted gracefully one by one without the periodic
scheduler, the queue drains, and the event store is given time to
reconcile what the kills cut off. Then everything is checked against the
ledger the tasks wrote:

- none lost: every task enqueued (both steps of every pipeline, every
  periodic tick) finished at least once;
- a task ran more often than it must only if one of its runs was started
  by a process that was killed;
- nothing left behind: no message, no lease, no lock, nothing parked;
- the lock was never held twice at once (a killed holder held it until its
  kill);
- the periodic task ran for each tick claimed, one task per tick;
- every task that finished is ``complete`` in the event store's tasks table;
- the SQLite files pass ``pragma integrity_check``.

``CHAOS_SEED`` picks the seed of the kills and of the producers' mix
(printed with the summary; run with ``-s`` to see it).
"""
import os
import random
import signal
import subprocess
import sys
import threading
import time
import types

import pytest

import chaos_app
from conftest import postgres_schema, query, wait_until
from test_delivery import TESTS, group, integrity

SEED = int(os.environ.get("CHAOS_SEED", "20240611"))
KILL_FOR = 40.0  # seconds of kills
KILL_EVERY = (2.0, 6.0)  # seconds between two kills, uniformly
PER_PRODUCER = 400  # tasks (a pipeline counts once) each producer enqueues
CONSUMERS = {"a": ["-w", "3"], "b": ["-w", "2"], "c": ["-w", "2", "-k", "process"]}
COMMON = ["--max-delay", "0.1", "--health-check-interval", "0.5",
          "--heartbeat-every", "0.5", "--max-recoveries", "50"]


class Queue:
    """Read-only counts of the queue's tables, on either engine."""

    def __init__(self, path=None, admin=None, schema=None):
        self.path, self.admin, self.schema = path, admin, schema
        if admin is None:
            self.tables = {"task": "task", "schedule": "schedule", "kv": "kv",
                           "tick": "hueyscope_periodic_tick"}
        else:
            self.tables = {"task": "huey_task", "schedule": "huey_schedule",
                           "kv": "huey_kv", "tick": "huey_periodic_tick"}

    def rows(self, sql):
        sql = sql.format(**self.tables)
        if self.admin is None:
            return query(self.path, sql)
        self.admin.execute("set search_path = %s" % self.schema)
        return self.admin.execute(sql.replace("%", "%%")).fetchall()

    def count(self, sql):
        return self.rows(sql)[0][0]

    def left(self):
        """{what: count} of everything that must be gone once all is done."""
        return {
            "queued": self.count("select count(*) from {task}"),
            "scheduled": self.count("select count(*) from {schedule}"),
            "leases": self.count("select count(*) from hueyscope_lease"),
            "lock rows": self.count("select count(*) from hueyscope_lock"),
            "locks": self.count("select count(*) from {kv} where key like '%.lock.%'"),
            "parked": self.count("select count(*) from hueyscope_dead_letter"),
        }

    def ticks(self):
        return [t for t, in self.rows("select tick from {tick} "
                                      "where task like '%every_minute'")]


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, cli):
    """The ``cli`` fixture running chaos_app on a SQLite file or in a
    PostgreSQL schema of its own (dropped afterwards)."""
    cli.ledger = cli.folder / "ledger.txt"
    cli.env.update(PYTHONPATH=str(TESTS), LEDGER=str(cli.ledger),
                   HUEYSCOPE_APP="chaos_app:huey")
    if request.param == "sqlite":
        cli.engine = "sqlite"
        cli.queue_view = Queue(path=cli.queue)
        yield cli
        return
    with postgres_schema("hs_chaos_") as (admin, schema, url):
        cli.env["HUEYSCOPE_QUEUE"] = url
        cli.engine = "postgresql"
        cli.queue_view = Queue(admin=admin, schema=schema)
        try:
            yield cli
        finally:
            cli.close()


# -- the run ------------------------------------------------------------------

class Chaos:
    """The consumers, what was killed and when."""

    def __init__(self, cli, seed):
        self.cli = cli
        self.rng = random.Random(seed)
        self.consumers = {}
        self.starts = {name: 0 for name in CONSUMERS}
        self.killed = {}  # pid -> time of its kill
        self.kills = []  # (time, what, pids)

    def start(self, name, periodic=True):
        self.starts[name] += 1
        self.consumers[name] = self.cli.start(
            "consume", *CONSUMERS[name], *COMMON,
            "--periodic" if periodic else "--no-periodic",
            name="%s-%d" % (name, self.starts[name]))

    def note_kill(self, what, when, pids):
        self.kills.append((when, what, pids))
        for pid in pids:
            self.killed.setdefault(pid, when)
        with open(self.cli.folder / "kills.txt", "a") as f:
            f.write("%.6f %s %s\n" % (when, what, " ".join(map(str, pids))))

    def kill_consumer(self, name):
        """SIGKILL a consumer's whole process group, then start it again."""
        started = self.consumers[name]
        assert started.proc.poll() is None, "consumer %s died on its own: %s" % (
            name, started.describe())
        # Stopped first, the group can fork no new member: the list of its
        # pids is then exactly the list of the pids the kill ends.
        os.killpg(started.pid, signal.SIGSTOP)
        pids = group(started.pid)
        # The kill's time is once every member has stopped: a ledger line
        # a member wrote between the signal and its stop is before it.
        wait_until(lambda: all(state(pid) in ("T", "Z", None) for pid in pids),
                   timeout=10, message="every process of the group stopped")
        when = time.time()
        os.killpg(started.pid, signal.SIGKILL)
        started.wait(10)
        wait_until(lambda: not group(started.pid), timeout=10,
                   message="every process of the group gone")
        self.note_kill("consumer-" + name, when, pids)
        self.start(name)

    def kill_worker(self, name):
        """SIGKILL one worker process of a process-worker consumer; False if
        none has run a task yet."""
        parent = self.consumers[name].pid
        ran = {pid for kind, _, _, pid, _ in chaos_app.ledger(self.cli.ledger)
               if kind == "start"}
        workers = sorted(set(children(parent)) & ran)
        if not workers:
            return False
        pid = self.rng.choice(workers)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not alive(pid), timeout=10, message="the worker gone")
        # Once it is gone: every line it wrote is before this time.
        self.note_kill("worker-" + name, time.time(), [pid])
        return True

    def victims(self):
        """Endless seeded rounds, each every kind of kill once in random order:
        every consumer's group, and a worker process of the process-worker one."""
        kinds = [(name, False) for name in sorted(CONSUMERS)]
        kinds += [(name, True) for name in sorted(CONSUMERS)
                  if "process" in CONSUMERS[name]]
        while True:
            self.rng.shuffle(kinds)
            yield from kinds

    def run_kills(self, seconds):
        end = time.monotonic() + seconds
        victims = self.victims()
        while time.monotonic() < end:
            # The load's rhythm, not a wait for anything.
            time.sleep(self.rng.uniform(*KILL_EVERY))
            name, worker = next(victims)
            if not (worker and self.kill_worker(name)):
                self.kill_consumer(name)


def up(started):
    """Whether a consumer got as far as its signal handlers (a stop signal
    before that ends the process as it would any program starting up)."""
    return "hueyscope consumer" in started.stderr


def children(pid):
    from test_delivery import children as of

    return of(pid)


def state(pid):
    """The state letter of ``pid`` (R, S, T, Z...), None once it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def produce(cli, seed):
    return subprocess.Popen(
        [sys.executable, "-c", "import chaos_app as a; a.produce(%d, %d)"
         % (seed, PER_PRODUCER)],
        cwd=cli.folder, env=cli.env, stdout=subprocess.DEVNULL,
        stderr=open(cli.folder / ("producer-%d.err" % seed), "w"))


# -- what the ledger says -----------------------------------------------------

class Ledger:
    """The ledger read once, by task."""

    def __init__(self, path):
        self.lines = chaos_app.ledger(path)
        self.enqueued = {}  # task id -> label
        self.starts, self.done = {}, {}  # task id -> [(pid, time)]
        self.label = {}
        for kind, task_id, label, pid, when in self.lines:
            self.label.setdefault(task_id, label)
            if kind == "enqueued":
                self.enqueued[task_id] = label
            elif kind == "start":
                self.starts.setdefault(task_id, []).append((pid, when))
            elif kind == "done":
                self.done.setdefault(task_id, []).append((pid, when))

    def periodic(self):
        return {t for t, label in self.label.items() if label == "periodic"}

    def expected(self):
        """Every task id that must finish: enqueued, or a periodic run."""
        return set(self.enqueued) | self.periodic()

    def finished(self):
        return set(self.done)


def unexplained_runs(ledger, killed):
    """{task id: (runs, runs required, runs by killed pids)} of the tasks
    that ran more often than they must with no killed run to explain it."""
    found = {}
    for task_id, starts in ledger.starts.items():
        needed = 2 if ledger.label[task_id] == "flaky" else 1
        cut = sum(1 for pid, when in starts if pid in killed and when <= killed[pid])
        if len(starts) - needed > cut:
            found[task_id] = (len(starts), needed, cut)
    return found


def lock_overlaps(ledger, killed):
    """Pairs of locked bodies that overlapped in time, and bodies that never
    ended (no finish, and their process was not killed)."""
    intervals, open_ended = [], []
    for task_id, starts in ledger.starts.items():
        if ledger.label[task_id] != "locked":
            continue
        done = list(ledger.done.get(task_id, []))
        for pid, began in starts:
            ends = [w for p, w in done if p == pid and w >= began]
            if ends:
                end = min(ends)
                done.remove((pid, end))
            elif pid in killed:
                end = killed[pid]
            else:
                open_ended.append((task_id, pid, began))
                continue
            intervals.append((began, end, task_id, pid))
    intervals.sort()
    overlaps = [(a, b) for a, b in zip(intervals, intervals[1:]) if b[0] < a[1]]
    return overlaps, open_ended


def store_statuses(cli):
    return dict(query(cli.events, "select task_id, status from tasks"))


def not_complete(cli, finished):
    statuses = store_statuses(cli)
    return {t: statuses.get(t) for t in finished if statuses.get(t) != "complete"}


def wait_complete(cli, finished, describe=lambda: ""):
    """Wait until every task of ``finished`` is complete in the store.

    The kills cut events off; the consumers' reconcile records them from
    the queue's outbox once they have been quiet for 10 s (QUIET_SECONDS),
    at a health check: 45 s is plenty.
    """
    deadline = time.monotonic() + 45
    while not_complete(cli, finished) and time.monotonic() < deadline:
        time.sleep(0.5)
    wrong = not_complete(cli, finished)
    if wrong:
        pytest.fail("tasks finished per the ledger but not complete in the "
                    "store after 45 s (%d): %s\n%s" % (
                        len(wrong), sorted(wrong.items())[:20], describe()))


# -- the soak -------------------------------------------------------------------

@pytest.mark.timeout(240)
def test_chaos_soak_nothing_lost_and_the_record_agrees(engine):
    cli = engine
    began = time.monotonic()
    chaos = Chaos(cli, SEED)
    for name in CONSUMERS:
        chaos.start(name)
    producers = [produce(cli, SEED + i) for i in (1, 2)]
    chaos.run_kills(KILL_FOR)
    for i, p in zip((1, 2), producers):
        assert p.wait(120) == 0, (
            cli.folder / ("producer-%d.err" % (SEED + i))).read_text()

    # No kills any more: each consumer is stopped gracefully and started
    # again without the periodic scheduler, so that no periodic message can
    # be enqueued just before the final stop.
    for name in sorted(CONSUMERS):
        old = chaos.consumers[name]
        wait_until(lambda: up(old), timeout=30, message="consumer %s up" % name)
        assert old.stop(signal.SIGTERM, timeout=60) == 0, old.describe()
        chaos.start(name, periodic=False)

    queue = cli.queue_view

    def drained():
        ledger = Ledger(cli.ledger)
        return (ledger.expected() <= ledger.finished()
                and not any(queue.left().values()))

    wait_until(drained, timeout=90, interval=0.5,
               message="every task finished and the queue empty")
    ledger = Ledger(cli.ledger)
    # The kills cut events off; the consumers' reconcile records them from
    # the queue's outbox once they have been quiet for 10 s.
    wait_complete(cli, ledger.finished(), lambda: summary(cli, chaos, ledger, began))
    for name, consumer in chaos.consumers.items():
        wait_until(lambda: up(consumer), timeout=30, message="consumer %s up" % name)
        assert consumer.stop(signal.SIGTERM, timeout=60) == 0, consumer.describe()

    ledger = Ledger(cli.ledger)
    report = summary(cli, chaos, ledger, began)
    print("\n" + report)
    lost = ledger.expected() - ledger.finished()
    assert not lost, "lost: %s\n%s" % (sorted(lost), report)
    assert not (set(ledger.starts) - ledger.expected()), report
    unexplained = unexplained_runs(ledger, chaos.killed)
    assert not unexplained, "ran again with no killed run: %s\n%s" % (
        unexplained, report)
    assert queue.left() == dict.fromkeys(queue.left(), 0), report
    overlaps, open_ended = lock_overlaps(ledger, chaos.killed)
    assert not overlaps, "the lock was held twice at once: %s\n%s" % (
        overlaps[:5], report)
    assert not open_ended, "locked bodies never ended: %s\n%s" % (open_ended, report)
    ticks = queue.ticks()
    assert ticks and len(ledger.periodic()) == len(ticks), (
        "periodic runs %s for ticks %s\n%s" % (ledger.periodic(), ticks, report))
    statuses = store_statuses(cli)
    assert set(statuses) == ledger.expected(), report
    wrong = not_complete(cli, ledger.finished())
    assert not wrong, "not complete in the store: %s\n%s" % (wrong, report)
    # An outcome is recorded once: two 'complete' events only for a task
    # that finished twice (killed after it finished, before it was settled).
    doubled = {t for t, in query(cli.events, "select task_id from events where "
                                 "signal = 'complete' group by task_id "
                                 "having count(*) > 1")}
    twice = {t for t, n in ledger.done.items() if len(n) > 1}
    assert doubled <= twice, "recorded twice: %s\n%s" % (sorted(doubled - twice),
                                                         report)
    assert integrity(cli.events) == "ok"
    if cli.engine == "sqlite":
        assert integrity(cli.queue) == "ok"
    assert chaos.kills, report


def summary(cli, chaos, ledger, began):
    """One paragraph of figures: what ran, what was killed, what ran twice."""
    labels = {}
    for task_id in ledger.expected():
        label = ledger.label.get(task_id, "?")
        labels[label] = labels.get(label, 0) + 1
    extra = {t: len(s) - (2 if ledger.label[t] == "flaky" else 1)
             for t, s in ledger.starts.items()}
    twice = {t for t, n in ledger.done.items() if len(n) > 1}
    kinds = {}
    for _, what, _ in chaos.kills:
        kind = what.split("-")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    recovered = query(cli.events, "select count(*) from events "
                      "where signal = 'recovered'")
    # Tasks with two 'complete' events (each must have finished twice).
    doubled = query(cli.events, "select count(*) from (select task_id from "
                    "events where signal = 'complete' group by task_id "
                    "having count(*) > 1)")
    return ("chaos soak on %s, seed %d: %d tasks (%s), %d kills (%s), "
            "%d extra runs of %d tasks, %d tasks finished twice or more, "
            "%d recovered events, %d tasks with two 'complete' events, %d ticks, "
            "%.0f s wall" % (
                cli.engine, SEED, len(ledger.expected()),
                ", ".join("%s %d" % kv for kv in sorted(labels.items())),
                len(chaos.kills),
                ", ".join("%s %d" % kv for kv in sorted(kinds.items())),
                sum(n for n in extra.values() if n > 0),
                sum(1 for n in extra.values() if n > 0), len(twice),
                recovered[0][0] if recovered else 0, doubled[0][0] if doubled else 0,
                len(cli.queue_view.ticks()), time.monotonic() - began))



# -- what the soak found --------------------------------------------------------

@pytest.mark.timeout(120)
def test_a_pipeline_step_whose_consumer_died_after_its_result_is_complete_in_the_store(
        engine):
    """Killed after a step's result is stored and before its next step is
    enqueued: recovery enqueues the next step from the stored result, and
    the step itself is recorded complete, under the run that ran it."""
    cli = engine
    out = subprocess.run(
        [sys.executable, "-c", "import chaos_app as a; f, s = a.huey.enqueue("
         "a.step1.s(1).then(a.step2)); print(f.id, s.id)"],
        cwd=cli.folder, env=cli.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    first_id, second_id = out.stdout.split()
    first = cli.start("consume", "-w", "1", "--no-periodic", *COMMON, name="first",
                      CHAOS_DIE_AFTER_STEP1=1)
    first.wait(60)  # its signal handler kills its whole group
    wait_until(lambda: not group(first.pid), timeout=10, message="the group gone")
    ledger = Ledger(cli.ledger)
    assert first_id in ledger.done and second_id not in ledger.starts

    second = cli.start("consume", "-w", "1", "--no-periodic", *COMMON, name="second")
    wait_until(lambda: second_id in Ledger(cli.ledger).done, timeout=30,
               message="the next step to run")
    wait_complete(cli, {first_id, second_id})
    assert up(second) and second.stop(signal.SIGTERM, timeout=60) == 0, second.describe()
    assert Ledger(cli.ledger).starts[first_id] == [ledger.starts[first_id][0]]
    # Once, under the dead consumer's run (host:pid:started).
    complete = query(cli.events, "select run_id from events where task_id = ? "
                     "and signal = 'complete'", (first_id,))
    assert len(complete) == 1 and ":%d:" % first.pid in complete[0][0], complete


@pytest.mark.timeout(60)
@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_a_process_starting_on_a_busy_postgresql_queue_waits_for_no_one(engine):
    """A consumer (or producer) opening a queue whose schema is complete
    takes no table lock: a worker between the release of its lease and the
    enqueue that goes with it (a retry, a pipeline's next step) neither
    blocks it nor deadlocks with it."""
    import psycopg
    from hueyscope.queue.postgres import make_postgres_huey

    dsn = engine.env["HUEYSCOPE_QUEUE"]
    make_postgres_huey("chaos", dsn)  # the schema, as the first consumer made it
    worker = psycopg.connect(dsn)
    try:
        worker.execute("delete from hueyscope_lease where id = -1")
        opened = []
        starting = threading.Thread(
            target=lambda: opened.append(make_postgres_huey("chaos", dsn)))
        starting.start()
        starting.join(20)
        done = not starting.is_alive()
        worker.execute("insert into huey_task (queue, data) values ('chaos', 'x')")
    finally:
        worker.rollback()
        worker.close()
    starting.join(20)
    assert done and opened, "the start waited for the worker's transaction"


@pytest.mark.timeout(60)
def test_a_periodic_task_done_before_its_enqueue_is_recorded_is_complete(tmp_path):
    """A worker can take, run and finish a periodic task between the write
    that claims its tick and the scheduler's 'enqueued' signal: the store
    still ends with the task complete, not enqueued."""
    import hueyscope
    from huey import crontab
    from huey import signals as S
    from hueyscope.queue.sqlite import SqliteHuey

    huey = SqliteHuey("tick", filename=str(tmp_path / "queue.db"), utc=True)
    ran = []

    @huey.periodic_task(crontab(minute="*"), context=True)
    def beat(task=None):
        ran.append(task.id)

    @huey.signal(S.SIGNAL_ENQUEUED)
    def a_quicker_worker(signal, task, *args):
        # Runs before the recorder's handler (huey calls the handlers of a
        # signal before those of every signal), as a worker of another
        # consumer would: its events reach the store first.
        if not ran:
            huey.execute(huey.dequeue())
            assert recorder.flush()

    recorder = hueyscope.attach(huey, events=str(tmp_path / "events.db"))
    for task in huey.read_periodic(huey._get_timestamp()):
        huey.enqueue(task)
    assert len(ran) == 1
    assert recorder.flush()
    assert store_statuses(types.SimpleNamespace(events=tmp_path / "events.db")) == {
        ran[0]: "complete"}
