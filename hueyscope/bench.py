"""``hueyscope bench``: what recording and leasing cost, measured side by side.

The same workload -- N small tasks enqueued, then drained by a consumer --
runs on bare SqliteHuey (huey's own dequeue and consumer, at-most-once), on
SqliteHuey with the hueyscope recorder, on the leased at-least-once queue
with hueyscope's consumer and the recorder (what ``hueyscope consume``
runs), with huey.contrib.stats, and with a naive insert-per-signal handler.
Each round
runs every variant once, in a fresh child process and a fresh folder, in
rotating order; the figure per variant is the median over rounds and is
quoted as a ratio to bare SqliteHuey measured in the same run, because this
is a shared, noisy machine and only ratios travel.

The drain clock starts when the consumer starts and stops when the last
task's result is stored and (for the recorder) its events are committed.
"""
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import click

from hueyscope.options import BadInput, Choice, IntRange

VARIANTS = ("bare", "hueyscope", "leased", "contrib.stats", "naive")
# Queue engines for --backends: each drains the "leased" variant, what
# hueyscope consume runs (Redis stays at-most-once: huey's own storage).
BACKENDS = ("sqlite", "postgres", "redis")
DEFAULT_POSTGRES = "postgresql://127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/15"
# Variants that need a package hueyscope does not install.
EXTRAS = {"contrib.stats": ("peewee", "pip install 'hueyscope[bench]'")}


def _missing(variant):
    """The install hint for ``variant`` if its package is missing, else None."""
    import importlib

    module, hint = EXTRAS.get(variant, (None, None))
    if module is None:
        return None
    try:
        importlib.import_module(module)
    except ImportError:
        return hint
    return None


def _workload(huey):
    @huey.task()
    def noop(i):
        return i

    return noop


def _naive_recorder(huey, path):
    """One INSERT and commit per signal: what a first attempt usually looks like."""
    import sqlite3
    import threading

    local = threading.local()

    def conn():
        if not hasattr(local, "conn"):
            local.conn = sqlite3.connect(path, timeout=30)
            local.conn.execute("pragma journal_mode=wal")
            local.conn.execute(
                "create table if not exists events (ts, task_id, task, signal)")
        return local.conn

    @huey.signal()
    def record(signal, task, exc=None):
        c = conn()
        c.execute("insert into events values (?, ?, ?, ?)",
                  (time.time(), task.id, task.name, signal))
        c.commit()


def run_variant(variant, tasks, workers, worker_type, durability, folder,
                before_drain=None, queue=None):
    """Run one variant in this process; returns drain seconds.

    ``before_drain(recorder)``, if given, runs once the tasks are enqueued
    (and, for the recorder, their events written), before the clock starts.
    ``queue`` is the queue's URL (default: a SQLite file in ``folder``).
    """
    from hueyscope.queue import make_huey
    from hueyscope.settings import Settings

    settings = Settings(queue=queue or os.path.join(folder, "queue.db"),
                        events=os.path.join(folder, "events.db"),
                        durability=durability,
                        delivery="at-least-once" if variant == "leased"
                        else "at-most-once")
    huey = make_huey(settings, name="bench")
    noop = _workload(huey)
    recorder = _attach_variant(variant, huey, settings, folder, workers,
                               worker_type)
    for i in range(tasks):
        noop(i)
    if recorder is not None:
        recorder.flush(timeout=120)

    if before_drain is not None:
        before_drain(recorder)
    options = dict(workers=workers, worker_type=worker_type, initial_delay=0.001,
                   max_delay=0.01, check_worker_health=False, periodic=False)
    if variant == "leased":
        import threading

        from hueyscope.consumer.runner import Consumer

        consumer = Consumer(huey, recorder=recorder, **options)
        start = time.perf_counter()
        threading.Thread(target=consumer.run, daemon=True).start()
        # Its worker processes fork from that thread: none may fork while
        # this one is inside SQLite (below), or the child's SQLite hangs.
        consumer.started.wait(60)
    else:
        consumer = huey.create_consumer(**options)
        start = time.perf_counter()
        consumer.start()
    storage = huey.storage
    while storage.result_store_size() < tasks:
        time.sleep(0.002)
    if recorder is not None:
        recorder.flush(timeout=120)
    elapsed = time.perf_counter() - start
    if variant == "leased":
        consumer.request_stop(graceful=True)
        consumer.wait_stopped(60)
        left = storage.sql("select count(*) from hueyscope_lease",
                           results=True)[0][0] if getattr(storage, "leased", False) else 0
        if left:
            raise RuntimeError("%d leases left after the drain" % left)
    else:
        consumer.stop(graceful=True)
    if recorder is not None:
        if variant != "leased":  # the consumer ended its run
            recorder.end_run("bench")
        # enqueued, executing, complete: worker processes write their own.
        _check_recorded(recorder, settings.events, 3 * tasks)
    return elapsed


def _attach_variant(variant, huey, settings, folder, workers, worker_type):
    """What records ``variant``'s events; the recorder for hueyscope's own."""
    if variant in ("hueyscope", "leased"):
        from hueyscope.events.recorder import attach

        # Writing as a consumer does (its run's role is "bench").
        recorder = attach(huey, events=settings.events, writer_process=True)
        recorder.begin_run(role="bench", workers=workers, worker_type=worker_type)
        return recorder
    if variant == "contrib.stats":
        import peewee
        from huey.contrib.stats import HueyStats

        HueyStats(huey, peewee.SqliteDatabase(
            os.path.join(folder, "stats.db"),
            pragmas={"journal_mode": "wal"})).connect()
    elif variant == "naive":
        _naive_recorder(huey, os.path.join(folder, "naive.db"))
    return None


def _check_recorded(recorder, events, expected, timeout=60.0):
    """A benchmark whose recorder lost an event measured nothing: raise.

    Counted in the store, where worker processes' events land too (each
    process records through a writer of its own, flushed as it exits).
    """
    from hueyscope.readonly import read_only

    stats = recorder.stats()
    if stats["dropped"]:
        raise RuntimeError("recorder dropped %(dropped)s events" % stats)
    deadline = time.monotonic() + timeout
    while True:
        written = read_only(events, lambda conn: conn.execute(
            "select count(*) from events").fetchone()[0])
        if written == expected:
            return
        if written > expected or time.monotonic() > deadline:
            raise RuntimeError("the event store holds %d events, expected %d"
                               % (written, expected))
        time.sleep(0.1)


def finished_task(task, now):
    """The buffered signals of one task that ran and completed at ``now``.

    As the recorder's handler buffers them: enqueued, executing, complete.
    """
    return [(now, "enqueued", task, 0, None, None, None, None, "Main", None),
            (now + 0.001, "executing", task, 0, None, None, None, None,
             "Worker-1", None),
            (now + 0.002, "complete", task, 0, None, None, 0.001, None,
             "Worker-1", None)]


def buffered_signals(tasks, split=False):
    """The buffered signals of ``tasks`` finished tasks, as the handler leaves them.

    With ``split`` every enqueue comes first, as when a producer and a
    consumer record them; otherwise each task's three signals are together.
    """
    from huey import MemoryHuey

    noop = _workload(MemoryHuey("bench"))
    now = time.time()
    signals = [finished_task(noop.s(i), now) for i in range(tasks)]
    if split:
        return [s[0] for s in signals] + [x for s in signals for x in s[1:]]
    return [x for s in signals for x in s]


def writer_capacity(events, folder, split=False):
    """Events per second the writer thread turns into committed rows.

    The buffer is filled with ``events`` signals of finished tasks (enqueued,
    executing, complete), as fast as huey could, then the clock runs while
    the writer thread drains it through the real flush path. With ``split``
    every enqueue comes first, so each task's row is inserted by one batch
    and updated by another, as when a producer and a consumer record it;
    otherwise a task's three signals share a batch.
    """
    from huey import MemoryHuey

    from hueyscope.events.recorder import Recorder

    recorder = Recorder(MemoryHuey("bench"), os.path.join(folder, "writer.db"))
    recorder.begin_run(role="bench")
    recorder.flush()  # the run row and schema exist before the clock starts
    items = buffered_signals(events // 3, split)
    start = time.perf_counter()
    recorder._buffer.extend(items)
    if not recorder.flush(timeout=600):
        raise RuntimeError("writer did not finish")
    elapsed = time.perf_counter() - start
    if recorder.stats()["written"] != len(items):
        raise RuntimeError("writer wrote %d of %d events" % (
            recorder.stats()["written"], len(items)))
    # Ended here, while its folder still exists: at exit the run would be
    # written into a store whose folder is gone, and wait for it.
    recorder.end_run("bench")
    return len(items) / elapsed


def _child(variant, tasks, workers, worker_type, durability, urls=None):
    with tempfile.TemporaryDirectory(prefix="hueyscope-bench-") as folder:
        if variant in ("writer", "writer-split"):
            return writer_capacity(tasks, folder, split=variant == "writer-split")
        if variant in BACKENDS:
            with _fresh_queue(variant, (urls or {}).get(variant)) as queue:
                return run_variant("leased", tasks, workers, worker_type,
                                   durability, folder, queue=queue)
        return run_variant(variant, tasks, workers, worker_type, durability,
                           folder)


@contextlib.contextmanager
def _fresh_queue(backend, url):
    """An empty queue on ``backend`` for one run, removed afterwards.

    PostgreSQL: a schema of its own, named in the DSN's search_path. Redis:
    the database number of the URL, flushed before and after.
    """
    if backend == "sqlite":
        yield None
    elif backend == "postgres":
        import psycopg

        schema = "hueyscope_bench_%d" % os.getpid()
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("drop schema if exists %s cascade" % schema)
            admin.execute("create schema %s" % schema)
            try:
                yield "%s%soptions=-csearch_path%%3D%s" % (
                    url, "&" if "?" in url else "?", schema)
            finally:
                admin.execute("drop schema %s cascade" % schema)
    else:
        import redis

        client = redis.Redis.from_url(url)
        client.flushdb()
        try:
            yield url
        finally:
            client.flushdb()


def _run_child(variant, tasks, workers, worker_type, durability, urls=None):
    code = ("import json, sys; from hueyscope.bench import _child; "
            "print(json.dumps(_child(*json.loads(sys.argv[1]))))")
    args = json.dumps([variant, tasks, workers, worker_type, durability, urls])
    proc = subprocess.run([sys.executable, "-c", code, args],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise click.ClickException("%s variant failed: %s" % (variant, tail))
    return float(proc.stdout.strip().splitlines()[-1])


@click.command(short_help="Measure the drain rate with and without recording.")
@click.option("--tasks", default=3000, show_default=True, type=IntRange(1),
              help="No-op tasks each variant drains, per round.")
@click.option("--workers", default=4, show_default=True, type=IntRange(1),
              help="Workers of each variant's consumer.")
@click.option("--worker-type", type=Choice(["thread", "process"]),
              default="thread", show_default=True,
              help="Run the tasks in threads or in forked processes.")
@click.option("--durability", type=Choice(["full", "normal"]),
              default="full", show_default=True,
              help="SQLite synchronous mode of each variant's queue (see "
                   "hueyscope consume --help).")
@click.option("--rounds", default=5, show_default=True, type=IntRange(1),
              help="Each round runs every variant once, in rotating order.")
@click.option("--variants", default=None,
              help="Comma-separated subset of: " + ", ".join(VARIANTS)
                   + " (default: all; contrib.stats only if peewee is installed).")
@click.option("--writer-events", default=300_000, show_default=True,
              type=IntRange(0), help="Events for the writer-only figure (0: skip).")
@click.option("--backends", default=None,
              help="Instead of the variants: comma-separated queue engines "
                   "among " + ", ".join(BACKENDS) + ", each draining what "
                   "hueyscope consume runs; ratios to sqlite.")
@click.option("--postgres-url", default=DEFAULT_POSTGRES, show_default=True,
              help="Server for --backends postgres (each run in a schema of "
                   "its own, dropped afterwards).")
@click.option("--redis-url", default=DEFAULT_REDIS, show_default=True,
              help="Server and database for --backends redis (flushed "
                   "before and after each run).")
def bench(tasks, workers, worker_type, durability, rounds, variants,
          writer_events, backends, postgres_url, redis_url):
    """Drain rate of bare SqliteHuey vs. with recorders and leases, side by side.

    Prints tasks/s per variant (median over rounds) and the ratio to bare
    SqliteHuey from the same run, then the writer's own capacity in events/s.
    The variant "leased" is what hueyscope consume runs: the at-least-once
    queue, hueyscope's consumer and the recorder.
    """
    if backends is not None:
        return _bench_backends(backends, tasks, workers, worker_type,
                               durability, rounds,
                               {"postgres": postgres_url, "redis": redis_url})
    asked = variants is not None
    chosen = [v.strip() for v in (variants or ",".join(VARIANTS)).split(",")
              if v.strip()]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown or not chosen:
        raise BadInput("unknown variant(s) %s: choose from %s" % (
            ", ".join(unknown) or "(none)", ", ".join(VARIANTS)))
    for variant in list(chosen):
        hint = _missing(variant)
        if hint and asked:
            raise BadInput("variant %s needs %s: %s" % (
                variant, EXTRAS[variant][0], hint))
        if hint:
            click.echo("%s: skipped, %s is not installed (%s)" % (
                variant, EXTRAS[variant][0], hint), err=True)
            chosen.remove(variant)
    if "bare" not in chosen:
        chosen.insert(0, "bare")
    click.echo("workload: %d tasks, %d %s workers, durability %s, %d rounds"
               % (tasks, workers, worker_type, durability, rounds))
    times = _rounds(chosen, rounds, tasks, workers, worker_type, durability)
    _print_rates(times, "bare", tasks, "variant")
    if writer_events:
        rate = _run_child("writer", writer_events, 0, "", "")
        click.echo("writer capacity: %.0f events/s (%d events, batches of 5000, "
                   "each task's signals in one batch)" % (rate, writer_events))
        rate = _run_child("writer-split", writer_events, 0, "", "")
        click.echo("writer capacity: %.0f events/s (the same, each task "
                   "enqueued in one batch and run in a later one, as by a "
                   "producer and a consumer)" % rate)


def _rounds(chosen, rounds, tasks, workers, worker_type, durability, urls=None):
    """{name: [drain seconds per round]}, every name once a round, rotating."""
    times = {v: [] for v in chosen}
    with click.progressbar(length=rounds * len(chosen), label="running",
                           file=sys.stderr) as bar:
        for r in range(rounds):
            order = chosen[r % len(chosen):] + chosen[:r % len(chosen)]
            for variant in order:
                times[variant].append(_run_child(
                    variant, tasks, workers, worker_type, durability, urls))
                bar.update(1)
    return times


def _print_rates(times, base_name, tasks, heading):
    base = tasks / statistics.median(times[base_name])
    click.echo("%-14s %10s %8s   %s" % (heading, "tasks/s", "ratio",
                                        "per-round tasks/s"))
    for name, runs in times.items():
        rate = tasks / statistics.median(runs)
        click.echo("%-14s %10.0f %7.2fx   %s" % (
            name, rate, rate / base, " ".join("%.0f" % (tasks / t) for t in runs)))


def _bench_backends(backends, tasks, workers, worker_type, durability, rounds,
                    urls):
    """``--backends``: the leased variant's drain on each queue engine."""
    chosen = [b.strip() for b in backends.split(",") if b.strip()]
    unknown = [b for b in chosen if b not in BACKENDS]
    if unknown or not chosen:
        raise BadInput("unknown backend(s) %s: choose from %s" % (
            ", ".join(unknown) or "(none)", ", ".join(BACKENDS)))
    for backend in chosen:
        _check_server(backend, urls.get(backend))
    if "sqlite" not in chosen:
        chosen.insert(0, "sqlite")
    click.echo("workload: %d tasks, %d %s workers, %d rounds, hueyscope "
               "consume with the recorder on each queue (sqlite durability %s)"
               % (tasks, workers, worker_type, rounds, durability))
    times = _rounds(chosen, rounds, tasks, workers, worker_type, durability, urls)
    _print_rates(times, "sqlite", tasks, "backend")


def _check_server(backend, url):
    """One line, exit 2, for a driver or server that is not there."""
    try:
        if backend == "postgres":
            import psycopg

            psycopg.connect(url, connect_timeout=5).close()
        elif backend == "redis":
            import redis

            redis.Redis.from_url(url, socket_connect_timeout=5).ping()
    except ImportError as exc:
        raise BadInput("--backends %s needs %s: pip install 'hueyscope[%s]'"
                       % (backend, exc.name, backend))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BadInput("cannot reach %s at %s: %s" % (backend, url, first))
