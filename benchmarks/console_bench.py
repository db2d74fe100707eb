"""How fast the console's pages answer on a big store and a deep queue.

Builds (or reuses) a synthetic event store (tests/synthetic.py, a million
events by default) and a SQLite queue of the demo catalogue holding
``--pending`` pending tasks (100,000), a thousand scheduled ones, a failed
set of ``--failed`` entries in several groups and a few leases; then times,
through Datasette's own client on the instance ``hueyscope browse --queue``
builds, as root: the Now page (HTML), its JSON (what the page polls), a
task's page (HTML and JSON) and the preview of a bulk retry of the biggest
failed group (a dry run). Each URL is fetched once to warm up, then
``--repeat`` times; the first answer (messages read for the first time)
and the median are reported against the target (300 ms).

    python benchmarks/console_bench.py --db /tmp/hueyscope-bench/events-1m.db
"""
import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from synthetic import build_synthetic  # noqa: E402

TARGET_MS = 300
SCHEDULED = 1000
GROUPS = 5  # failed-set fingerprints


def fill_queue(path, events, pending, failed):
    """A queue at ``path`` with ``pending`` tasks, scheduled, failed and leased ones."""
    from hueyscope.apps import open_app
    from hueyscope.queue.liveness import host_identity, process_start
    from hueyscope.settings import Settings

    settings = Settings.build(queue=str(path), events=str(events))
    huey = open_app(settings, events=False)
    from hueyscope import demo_tasks

    names = [demo_tasks.quick_add, demo_tasks.slow_io, demo_tasks.fetch,
             demo_tasks.store]
    storage, now = huey.storage, time.time()
    with storage.db(commit=True) as curs:
        curs.executemany(
            "insert into task (queue, data, priority) values (?, ?, ?)",
            ((storage.name, huey.serialize_task(names[i % 4].s(i, 1)
                                                if i % 4 == 0 else names[i % 4].s(i)),
              (i % 3) * 10) for i in range(pending)))
        curs.executemany(
            "insert into schedule (queue, data, timestamp) values (?, ?, ?)",
            ((storage.name, huey.serialize_task(demo_tasks.store.s(i)), now + 60 + i)
             for i in range(SCHEDULED)))
        curs.executemany(
            "insert into hueyscope_dead_letter (queue, task_id, task, data, "
            "priority, reason, recoveries, run_id, parked, kind, error_type, "
            "fingerprint) values (?, ?, ?, ?, 0, 'failed for good', 0, 'r', ?, "
            "'failed', 'ValueError', ?)",
            ((storage.name, "f-%d" % i, "hueyscope.demo_tasks.slow_io",
              huey.serialize_task(demo_tasks.slow_io.s(i)), now - i,
              "fp%d" % (i % GROUPS if i % 2 else 0)) for i in range(failed)))
        curs.execute(
            "insert into hueyscope_holder (host, hostname, pid, pid_start, run_id, "
            "started, heartbeat) values (?, 'bench', ?, ?, 'bench-run', ?, ?)",
            (host_identity(), os.getpid(), process_start(os.getpid()), now, now))
        holder = curs.execute("select max(id) from hueyscope_holder").fetchone()[0]
        curs.executemany(
            "insert into hueyscope_lease (queue, data, priority, holder, taken) "
            "values (?, ?, 0, ?, ?)",
            ((storage.name, huey.serialize_task(demo_tasks.slow_io.s(i)), holder,
              now - i) for i in range(4)))


async def measure(ds, url, cookies, repeat):
    start = time.perf_counter()
    response = await ds.client.get(url, cookies=cookies)  # warm-up
    first = (time.perf_counter() - start) * 1000
    if response.status_code != 200:
        raise SystemExit("%s -> %s: %s" % (url, response.status_code,
                                           response.text[:300]))
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        response = await ds.client.get(url, cookies=cookies)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200
    return first, statistics.median(times), max(times)


def task_with_history(db):
    conn = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    try:
        return conn.execute("select task_id from tasks where attempts > 2 "
                            "order by finished desc limit 1").fetchone()[0]
    finally:
        conn.close()


async def main_async(args, queue):
    from hueyscope.browse.app import make_datasette

    ds = make_datasette([args.db], console={"queue": str(queue),
                                            "app": "hueyscope.demo_tasks:huey",
                                            "events": args.db})
    root = {"ds_actor": ds.sign({"a": {"id": "root"}}, "actor")}
    task_id = task_with_history(args.db)
    pages = [
        ("Now (html)", "/-/hueyscope"),
        ("Now (json, polled)", "/-/hueyscope/now.json"),
        ("task (html)", "/-/hueyscope/task/%s" % task_id),
        ("task (json)", "/-/hueyscope/task/%s.json" % task_id),
        ("preview retry of a group", "/-/hueyscope/preview?action=retry&fingerprint=fp0"),
    ]
    return [(label,) + await measure(ds, url, root, args.repeat)
            for label, url in pages]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--db", default="/tmp/hueyscope-bench/events-1m.db")
    parser.add_argument("--pending", type=int, default=100_000)
    parser.add_argument("--failed", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.makedirs(os.path.dirname(os.path.abspath(args.db)), exist_ok=True)
    if not os.path.exists(args.db):
        start = time.perf_counter()
        build_synthetic(args.db, events=args.events)
        print("built %s (%d events) in %.1f s" % (
            args.db, args.events, time.perf_counter() - start))
    queue = Path(args.db).with_name("console-queue-%d.db" % args.pending)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(str(queue) + suffix):
            os.remove(str(queue) + suffix)
    fill_queue(queue, args.db, args.pending, args.failed)
    conn = sqlite3.connect("file:%s?mode=ro" % args.db, uri=True)
    events = conn.execute("select count(*) from events").fetchone()[0]
    conn.close()
    print("store: %d events; queue: %d pending, %d scheduled, %d failed; "
          "median of %d warm runs\n" % (events, args.pending, SCHEDULED,
                                        args.failed, args.repeat))
    rows = asyncio.run(main_async(args, queue))
    width = max(len(r[0]) for r in rows)
    print("%-*s  %9s  %9s  %9s  %s" % (width, "page", "first", "median", "max",
                                        "target"))
    over = 0
    for label, first, median, worst in rows:
        over += median > TARGET_MS or first > TARGET_MS
        print("%-*s  %7.1f ms  %7.1f ms  %6.1f ms  %s" % (
            width, label, first, median, worst,
            "ok" if max(first, median) <= TARGET_MS else "OVER"))
    print("\n%d of %d pages within %d ms" % (len(rows) - over, len(rows), TARGET_MS))
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
