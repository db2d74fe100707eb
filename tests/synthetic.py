"""A synthetic event store: days of realistic history in seconds.

Benchmarks of the reports and of Datasette need an event store with a
million events that looks like a real deployment: several task names with
their own latency, retries that end in success or in failure, locks,
schedules, revocations, expiries, pipelines, periodic heartbeats, consumer
runs on two hosts (one of them killed with tasks still executing, which the
reports call lost) and queue depth samples.

:func:`build_synthetic` is deterministic for a seed: the same arguments give
the same rows. It writes through the real schema
(:func:`hueyscope.events.schema.open_event_store`) and fills every column the
recorder fills, so whatever reads a real store reads this one.

Rows are generated task by task in time order and written with
``executemany`` in large batches inside one transaction; the events and tasks
indexes are dropped during the load and rebuilt once at the end, which is
several times faster than maintaining them row by row.

A fixture generator, not part of the package: nothing a deployment runs
needs it. Tests import it as ``synthetic`` (pytest puts tests/ on their
path); benchmarks run from a checkout add tests/ to ``sys.path``.
"""
import hashlib
import json
import math
import random
import uuid

from hueyscope.events.schema import number_tasks, open_event_store

# Sunday 2024-06-02 00:00:00 UTC: the default end of the synthetic history,
# fixed so that a seed always gives the same store.
DEFAULT_END = 1717286400.0
QUEUE = "hueyscope"
BATCH = 50_000

EVENT_COLUMNS = (
    "ts", "run_id", "queue", "task_id", "task", "signal", "attempt",
    "retries_left", "priority", "eta", "duration", "wait", "error_type",
    "error", "traceback", "fingerprint", "args", "kwargs", "host", "pid",
    "worker",
)
TASK_COLUMNS = (
    "task_id", "task", "queue", "status", "enqueued", "ready", "started",
    "finished", "attempts", "wait", "duration", "error_type", "error",
    "fingerprint", "priority", "eta", "parent_id", "run_id", "updated",
)
VERSIONS = json.dumps({"hueyscope": "0.1.0", "huey": "3.5.4",
                       "python": "3.11.2", "sqlite": "3.40.1"})
# What consumer runs record of the registry (runs.periodic).
PERIODIC = json.dumps(["fast_heartbeat", "heartbeat"])

# name -> (weight, priority, retries, retry_delay, median run time seconds)
CATALOGUE = {
    "quick_add": (30, 50, 0, 0, 0.004),
    "slow_io": (14, 10, 0, 0, 1.2),
    "flaky_network_call": (14, 100, 3, 1, 0.25),
    "cpu_pi_estimate": (8, None, 0, 0, 0.6),
    "locked_sync_job": (3, None, 3, 2, 0.8),
    "fetch_page": (8, None, 1, 5, 0.35),
    "send_reminder": (6, None, 0, 0, 0.05),
}
PIPELINE = ("fetch_page", "transform_page", "store_page")
PIPELINE_STEPS = {"transform_page": (None, 0, 0, 0.15),
                  "store_page": (None, 2, 3, 0.08)}
HEARTBEATS = ("heartbeat", "fast_heartbeat")

# (error type, message template, innermost frame) per failing task.
ERRORS = {
    "flaky_network_call": ("ConnectionError",
                           "connection reset by peer (api-{n}.example.com:443)",
                           ("hueyscope/demo_tasks.py", 88, "flaky_network_call")),
    "slow_io": ("TimeoutError", "read timed out after {n}.0 seconds",
                ("hueyscope/demo_tasks.py", 61, "slow_io")),
    "cpu_pi_estimate": ("ZeroDivisionError", "float division by zero",
                        ("hueyscope/demo_tasks.py", 102, "cpu_pi_estimate")),
    "transform_page": ("ValueError", "unexpected <td> in row {n}: no price column",
                       ("hueyscope/demo_tasks.py", 140, "transform_page")),
    "store_page": ("sqlite3.OperationalError", "database is locked",
                   ("hueyscope/demo_tasks.py", 155, "store_page")),
    "fetch_page": ("httpx.HTTPStatusError",
                   "Server error '503 Service Unavailable' for url "
                   "'https://shop.example.com/page/{n}'",
                   ("hueyscope/demo_tasks.py", 121, "fetch_page")),
}
# Probability that one attempt of a task fails.
FAILURE_RATE = {"flaky_network_call": 0.35, "slow_io": 0.02,
                "cpu_pi_estimate": 0.004, "transform_page": 0.03,
                "store_page": 0.05, "fetch_page": 0.06}


def _fingerprint(error_type, template, frame):
    """Same recipe as the recorder: type, normalised message, innermost frame."""
    normal = template.replace("{n}", "N")
    text = "%s|%s|%s:%s" % (error_type, normal, frame[0], frame[2])
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _traceback(task, error_type, message, frame):
    return (
        "Traceback (most recent call last):\n"
        '  File "/srv/app/venv/lib/python3.11/site-packages/huey/api.py", '
        "line 452, in _execute\n    task_value = task.execute()\n"
        '  File "/srv/app/venv/lib/python3.11/site-packages/huey/api.py", '
        "line 890, in execute\n    return func(*args, **kwargs)\n"
        '  File "/srv/app/%s", line %d, in %s\n    raise %s(%r)\n'
        "%s: %s" % (frame[0], frame[1], frame[2], error_type.split(".")[-1],
                    message, error_type, message))


class _Run:
    __slots__ = ("id", "role", "host", "pid", "started", "stopped", "reason",
                 "workers", "heartbeat", "died")

    def __init__(self, rng, role, host, started, stopped, reason, workers):
        self.id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        self.role, self.host, self.pid = role, host, rng.randint(2000, 60000)
        self.started, self.stopped, self.reason = started, stopped, reason
        self.workers = workers
        self.heartbeat = stopped
        # Time a killed run stopped working (its tasks in flight are lost).
        self.died = None


def _plan_runs(rng, start, end, days):
    """Consumer runs on two hosts and one producer run per day.

    worker-a restarts every day (graceful stops, a deploy's SIGTERM now and
    then); worker-b runs for a day and a half at a time, and one of its runs
    is killed in the middle of the history (SIGKILL: no stop recorded until
    the next run on that host notices).
    """
    consumers, producers = [], []
    span = end - start
    for host, length, workers in (("worker-a", 86400.0, 4),
                                  ("worker-b", 129600.0, 8)):
        t = start - rng.uniform(600, 3600)
        n = 0
        while t < end:
            stop = t + length * rng.uniform(0.8, 1.1)
            reason = "graceful" if n % 3 else "sigterm"
            run = _Run(rng, "consumer", host, t, stop, reason, workers)
            if stop >= end:
                run.stopped = run.reason = None
                run.heartbeat = end - rng.uniform(1, 20)
            consumers.append(run)
            t = stop + rng.uniform(2, 30)
            n += 1
    # Kill the worker-b run that covers the middle of the history.
    middle = start + span / 2
    for run in consumers:
        if run.host == "worker-b" and run.started < middle < (run.stopped or end):
            run.died = middle
            run.heartbeat = middle - rng.uniform(0, 10)
            # The next run on the host noticed the stale heartbeat.
            run.stopped, run.reason = run.heartbeat, "killed"
            later = [r for r in consumers if r.host == "worker-b"
                     and r.started > run.started]
            if later:
                later[0].started = middle + 300
            break
    day = 0
    while start + day * 86400 < end:
        t = start + day * 86400 - 60
        stop = min(t + 86400 + 30, end)
        run = _Run(rng, "producer", "web-1", t, stop, "graceful", None)
        if stop >= end:
            run.stopped = run.reason = None
            run.heartbeat = end
        producers.append(run)
        day += 1
    return consumers, producers


class _Generator:
    """Turns arrivals into events and task rows, one task at a time."""

    def __init__(self, rng, start, end, days, consumers, producers):
        self.rng, self.start, self.end, self.days = rng, start, end, days
        self.consumers, self.producers = consumers, producers
        self.events, self.tasks = [], []
        self.count = 0
        # A few backlog episodes (deploys, traffic spikes) that slow queues.
        self.bursts = [(start + rng.uniform(0, end - start),
                        rng.uniform(600, 2400), rng.uniform(20, 240))
                       for _ in range(max(2, days * 2))]
        self.fingerprints = {task: _fingerprint(*spec)
                             for task, spec in ERRORS.items()}

    def backlog(self, t):
        """Extra queue wait (seconds) at time t from the backlog episodes."""
        extra = 0.0
        for centre, width, height in self.bursts:
            d = (t - centre) / width
            if -3 < d < 3:
                extra += height * math.exp(-d * d)
        return extra

    def consumer_at(self, t, host=None):
        """The consumer run live at t: on ``host``, else on either (at random)."""
        if host is None:
            first = self.rng.random() < 0.55
            hosts = ("worker-a", "worker-b") if first else ("worker-b", "worker-a")
        else:
            hosts = (host,)
        for name in hosts:
            for run in self.consumers:
                if run.host == name and run.started <= t and (
                        run.stopped is None or t < run.stopped):
                    return run
        return None

    def producer_at(self, t):
        for run in self.producers:
            if run.started <= t and (run.stopped is None or t < run.stopped):
                return run
        return self.producers[-1]

    def uid(self):
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def emit(self, ts, run, task_id, task, signal, attempt=None,
             retries_left=None, priority=None, eta=None, duration=None,
             wait=None, error=None, args=None, kwargs=None, worker=None):
        error_type = message = tb = fp = None
        if error is not None:
            error_type, message, tb, fp = error
        self.events.append((
            ts, run.id, QUEUE, task_id, task, signal, attempt, retries_left,
            priority, eta, duration, wait, error_type, message, tb, fp, args,
            kwargs, run.host, run.pid, worker))
        self.count += 1

    def make_error(self, task):
        error_type, template, frame = ERRORS[task]
        message = template.replace("{n}", str(self.rng.randint(1, 9999)))
        if task == "slow_io":
            message = template.replace("{n}", str(self.rng.choice((5, 10, 30))))
        return (error_type, message, _traceback(task, error_type, message, frame),
                self.fingerprints[task])

    def run_time(self, median):
        return median * math.exp(self.rng.gauss(0, 0.6))

    def queue_wait(self, t, priority):
        base = 0.02 * math.exp(self.rng.gauss(0, 1.0))
        extra = self.backlog(t)
        if priority and priority >= 50:
            extra *= 0.3
        return base + extra * self.rng.uniform(0.5, 1.0)

    def task(self, name, enqueued, spec, parent_id=None, task_id=None,
             producer=None, eta=None, revoke=False, expire=False,
             locked_attempts=0, args="[]", kwargs="{}", children=()):
        """Emit one task's lifecycle; returns its row."""
        rng = self.rng
        priority, retries, delay, median = spec
        task_id = task_id or self.uid()
        enq_run = producer or self.producer_at(enqueued)
        row = dict(task_id=task_id, task=name, queue=QUEUE, status="enqueued",
                   enqueued=enqueued, ready=eta or enqueued, started=None,
                   finished=None, attempts=0, wait=None, duration=None,
                   error_type=None, error=None, fingerprint=None,
                   priority=priority, eta=eta, parent_id=parent_id,
                   run_id=None, updated=enqueued)
        self.emit(enqueued, enq_run, task_id, name, "enqueued",
                  retries_left=retries, priority=priority, eta=eta, args=args,
                  kwargs=kwargs)
        ready = eta or enqueued
        if eta:
            t = enqueued + rng.uniform(0.005, 0.5)
            run = self.consumer_at(t)
            if t > self.end or run is None:
                self.tasks.append(row)
                return row
            self.emit(t, run, task_id, name, "scheduled", retries_left=retries,
                      priority=priority, eta=eta, args=args, kwargs=kwargs)
            row.update(status="scheduled", updated=t)
        attempt, left = 1, retries
        while True:
            wait = self.queue_wait(ready, priority)
            started = ready + wait
            run = self.consumer_at(started)
            if run is None:  # both hosts restarting: wait for the next one
                started += 60
                wait += 60
                run = self.consumer_at(started)
            if started > self.end or run is None:
                break
            worker = "Worker-%d" % rng.randint(1, run.workers)
            common = dict(attempt=attempt, retries_left=left, priority=priority,
                          eta=eta, args=args, kwargs=kwargs, worker=worker)
            if revoke or expire:
                signal = "revoked" if revoke else "expired"
                self.emit(started, run, task_id, name, signal, **common)
                row.update(status=signal, finished=started, run_id=run.id,
                           updated=started)
                break
            self.emit(started, run, task_id, name, "executing", wait=wait,
                      **common)
            # Like the recorder: the task's wait is its latest execution's.
            row.update(status="executing", started=started, run_id=run.id,
                       attempts=attempt, updated=started, wait=wait)
            if attempt <= locked_attempts:
                duration = rng.uniform(0.0005, 0.003)
                signal, error = "locked", None
            else:
                duration = self.run_time(median)
                failed = rng.random() < FAILURE_RATE.get(name, 0.0)
                signal = "error" if failed else "complete"
                error = self.make_error(name) if failed else None
            finished = started + duration
            if run.died is not None and started < run.died <= finished:
                break  # killed mid-task: executing forever, i.e. lost
            if run.reason == "sigterm" and run.stopped and \
                    started < run.stopped <= finished:
                finished = run.stopped
                self.emit(finished, run, task_id, name, "interrupted",
                          duration=finished - started, **common)
                row.update(status="interrupted", finished=finished,
                           duration=finished - started, updated=finished)
                break
            if finished > self.end:
                break  # still running when the history ends: in flight
            self.emit(finished, run, task_id, name, signal, duration=duration,
                      error=error, **common)
            row.update(status=signal, finished=finished, duration=duration,
                       updated=finished)
            if error:
                row.update(status="failed", error_type=error[0],
                           error=error[1], fingerprint=error[3])
            if signal == "complete":
                for child in children:
                    child(finished, run)
                break
            if left <= 0:
                break
            # huey retries: 'retrying', then back on the schedule after the delay.
            t = finished + rng.uniform(0.0002, 0.002)
            left -= 1
            self.emit(t, run, task_id, name, "retrying", attempt=attempt,
                      retries_left=left, priority=priority, eta=eta,
                      args=args, kwargs=kwargs, worker=worker)
            row.update(status="retrying", updated=t)
            ready = t + delay
            if delay:
                eta = ready
                self.emit(t + 0.0005, run, task_id, name, "scheduled",
                          attempt=attempt, retries_left=left, priority=priority,
                          eta=eta, args=args, kwargs=kwargs, worker=worker)
                row.update(status="scheduled", eta=eta, ready=ready,
                           updated=t + 0.0005)
            attempt += 1
        self.tasks.append(row)
        return row

    def pipeline(self, t):
        """fetch_page -> transform_page -> store_page, each step a task."""
        ids = [self.uid() for _ in PIPELINE]
        page = self.rng.randint(1, 5000)
        args = json.dumps(["https://shop.example.com/page/%d" % page])
        done = set()

        def step(i):
            def enqueue(when, run):
                done.add(i)
                name = PIPELINE[i]
                self.task(name, when + self.rng.uniform(0.001, 0.01),
                          PIPELINE_STEPS[name], parent_id=ids[i - 1],
                          task_id=ids[i], producer=run, args="[]",
                          children=(step(i + 1),) if i + 1 < len(PIPELINE) else ())
            return enqueue

        spec = CATALOGUE["fetch_page"]
        self.task("fetch_page", t, (spec[1], spec[2], spec[3], spec[4]),
                  task_id=ids[0], args=args, children=(step(1),))
        # Steps never enqueued (an earlier step failed or is still running).
        for i in range(1, len(PIPELINE)):
            if i not in done:
                self.tasks.append(dict(
                    task_id=ids[i], task=PIPELINE[i], queue=QUEUE,
                    status="waiting", enqueued=None, ready=None, started=None,
                    finished=None, attempts=0, wait=None, duration=None,
                    error_type=None, error=None, fingerprint=None,
                    priority=None, eta=None, parent_id=ids[i - 1], run_id=None,
                    updated=t))

    def arrival(self, t):
        """One producer arrival at time t: pick a task from the catalogue."""
        rng = self.rng
        names = list(CATALOGUE)
        name = rng.choices(names, weights=[CATALOGUE[n][0] for n in names])[0]
        _, priority, retries, delay, median = CATALOGUE[name]
        spec = (priority, retries, delay, median)
        if name == "fetch_page":
            self.pipeline(t)
        elif name == "locked_sync_job":
            # Three at once; they queue up behind the lock one at a time.
            producer = self.producer_at(t)
            for k in range(3):
                self.task(name, t + k * 0.001, spec, producer=producer,
                          locked_attempts=k if rng.random() > 0.05 else 4,
                          args=json.dumps(["ledger-%d" % rng.randint(1, 40)]))
        elif name == "send_reminder":
            # Delayed work: some revoked before they run, some expire.
            eta = t + rng.uniform(30, 3600)
            r = rng.random()
            self.task(name, t, spec, eta=eta, revoke=r < 0.12,
                      expire=0.12 <= r < 0.18,
                      args=json.dumps([rng.randint(1, 100000)]),
                      kwargs=json.dumps({"channel": rng.choice(("email", "sms"))}))
        elif name == "quick_add":
            self.task(name, t, spec,
                      args=json.dumps([rng.randint(0, 999), rng.randint(0, 999)]))
        elif name == "cpu_pi_estimate":
            self.task(name, t, spec, args=json.dumps([rng.choice((10**5, 10**6))]))
        else:
            self.task(name, t, spec, args=json.dumps([rng.randint(1, 500)]))

    def stranded(self, run, started, interrupted=False):
        """A task caught executing when its consumer stopped.

        A killed run leaves it executing forever (lost); a SIGTERM
        interrupts it; the live runs at the end of the history are simply
        still working on it (in flight).
        """
        rng = self.rng
        name = rng.choice(("slow_io", "cpu_pi_estimate", "slow_io"))
        _, priority, retries, _, _ = CATALOGUE[name]
        task_id = self.uid()
        wait = rng.uniform(0.01, 0.5)
        enqueued = started - wait
        args = json.dumps([rng.randint(1, 500)])
        worker = "Worker-%d" % rng.randint(1, run.workers)
        self.emit(enqueued, self.producer_at(enqueued), task_id, name,
                  "enqueued", retries_left=retries, priority=priority,
                  args=args, kwargs="{}")
        common = dict(attempt=1, retries_left=retries, priority=priority,
                      args=args, kwargs="{}", worker=worker)
        self.emit(started, run, task_id, name, "executing", wait=wait, **common)
        row = dict(task_id=task_id, task=name, queue=QUEUE, status="executing",
                   enqueued=enqueued, ready=enqueued, started=started,
                   finished=None, attempts=1, wait=wait, duration=None,
                   error_type=None, error=None, fingerprint=None,
                   priority=priority, eta=None, parent_id=None, run_id=run.id,
                   updated=started)
        if interrupted:
            self.emit(run.stopped, run, task_id, name, "interrupted",
                      duration=run.stopped - started, **common)
            row.update(status="interrupted", finished=run.stopped,
                       duration=run.stopped - started, updated=run.stopped)
        self.tasks.append(row)

    def incidents(self):
        """Tasks left behind by killed, SIGTERMed and still-running consumers."""
        rng = self.rng
        for run in self.consumers:
            if run.died is not None:
                for _ in range(rng.randint(3, 5)):
                    self.stranded(run, run.died - rng.uniform(0.2, 20))
            elif run.reason == "sigterm":
                for _ in range(rng.randint(1, 2)):
                    self.stranded(run, run.stopped - rng.uniform(0.2, 5),
                                  interrupted=True)
            elif run.stopped is None:
                for _ in range(rng.randint(1, 2)):
                    self.stranded(run, self.end - rng.uniform(0.2, 5))

    def periodic(self, name, t):
        run = self.consumer_at(t)
        if run is not None:
            self.task(name, t, (None, 0, 0, 0.002), producer=run)


def _drop_indexes(conn, tables):
    rows = conn.execute(
        "select name, sql from sqlite_master where type = 'index' "
        "and sql is not null and tbl_name in (%s)" % ",".join("?" * len(tables)),
        tables).fetchall()
    for name, _ in rows:
        conn.execute("drop index [%s]" % name)
    return [sql for _, sql in rows]


def _samples(gen, rng, start, end):
    """Queue depth every 30 s from each live consumer, following the backlog."""
    rows = []
    t = start
    while t < end:
        for host in ("worker-a", "worker-b"):
            run = gen.consumer_at(t, host)
            if run is None or (run.died is not None and t >= run.died):
                continue
            backlog = gen.backlog(t)
            pending = int(max(0, rng.gauss(2 + backlog * 3, 1 + backlog * 0.3)))
            scheduled = int(max(0, rng.gauss(40, 6)))
            in_flight = min(run.workers, int(rng.uniform(0, run.workers + 1)))
            rows.append((t + rng.uniform(0, 1), QUEUE, pending, scheduled,
                         in_flight, run.id))
        t += 30
    return rows


def build_synthetic(path, events=1_000_000, seed=1, days=7, progress=None,
                    end=DEFAULT_END):
    """Create an event store at ``path`` holding about ``events`` events.

    The history covers ``days`` days ending at ``end`` (unix seconds, UTC).
    ``progress``, if given, is called as ``progress(events_written, events)``
    after every batch. Returns the number of events written (the target, give
    or take the few events of the last task).
    """
    if events < 1 or days < 1:
        raise ValueError("events and days must be positive")
    rng = random.Random(seed)
    start = end - days * 86400.0
    db = open_event_store(str(path))
    conn = db.conn
    consumers, producers = _plan_runs(rng, start, end, days)
    gen = _Generator(rng, start, end, days, consumers, producers)

    # Periodic heartbeats take about 6% of the events, whatever the size.
    beats = max(2, int(events * 0.06 / 3))
    beat_every = (end - start) / beats
    next_beat = start + beat_every
    fast_every = beat_every / 4 if events >= 200_000 else beat_every
    next_fast = start + fast_every

    conn.execute("begin")
    index_sql = _drop_indexes(conn, ["events", "tasks"])
    event_sql = "insert into events (%s) values (%s)" % (
        ", ".join(EVENT_COLUMNS), ", ".join("?" * len(EVENT_COLUMNS)))
    task_sql = "insert into tasks (%s) values (%s)" % (
        ", ".join(TASK_COLUMNS), ", ".join("?" * len(TASK_COLUMNS)))
    written = 0

    def flush():
        nonlocal written
        conn.executemany(event_sql, gen.events)
        conn.executemany(task_sql, [tuple(r[c] for c in TASK_COLUMNS)
                                    for r in gen.tasks])
        written += len(gen.events)
        gen.events.clear()
        gen.tasks.clear()
        if progress:
            progress(min(written, events), events)

    # Arrivals are spread over the period with a daily rhythm: the position
    # in time is a warped function of how many events are already generated.
    cycles = 2 * math.pi * days
    while gen.count < events:
        u = gen.count / events
        t = start + (u - 0.45 * math.sin(cycles * u) / cycles) * (end - start)
        t = min(max(t, start), end - 1)
        while next_beat <= t:
            gen.periodic("heartbeat", next_beat)
            next_beat += beat_every
        while next_fast <= t and fast_every != beat_every:
            gen.periodic("fast_heartbeat", next_fast)
            next_fast += fast_every
        gen.arrival(t + rng.uniform(0, 0.5))
        if len(gen.events) >= BATCH:
            flush()
    gen.incidents()
    flush()

    # Number tasks in the order they were written and point every event at
    # its task, as the writer does.
    number_tasks(conn)
    for sql in index_sql:
        conn.execute(sql)
    conn.executemany(
        "insert into runs (id, role, host, pid, started, stopped, stop_reason, "
        "workers, worker_type, queue, backend, versions, heartbeat, app, "
        "periodic) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(r.id, r.role, r.host, r.pid, r.started, r.stopped, r.reason,
          r.workers, "thread" if r.role == "consumer" else None, QUEUE,
          "sqlite", VERSIONS, r.heartbeat, "hueyscope.demo_tasks:huey",
          PERIODIC if r.role == "consumer" else None)
         for r in consumers + producers])
    conn.execute(
        "update runs set events_written = "
        "(select count(*) from events where events.run_id = runs.id)")
    conn.executemany(
        "insert into queue_samples (ts, queue, pending, scheduled, in_flight, "
        "run_id) values (?, ?, ?, ?, ?, ?)", _samples(gen, rng, start, end))
    conn.execute("delete from rollup_hourly")
    conn.execute(
        "insert into rollup_hourly (hour, task, signal, count, duration_sum, "
        "duration_max, wait_sum) "
        "select cast(ts / 3600 as integer) * 3600.0, task, signal, count(*), "
        "sum(duration), max(duration), sum(wait) from events "
        "group by 1, task, signal")
    conn.execute("commit")
    conn.execute("analyze")
    db.close()
    return written
