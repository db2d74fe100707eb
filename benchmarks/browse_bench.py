"""How fast Datasette answers over a big event store.

Builds (or reuses) a synthetic event store, then times, through Datasette's
own client on the instance ``hueyscope browse`` serves, every canned query
(JSON) and the default page of every table (HTML, with its facets, and
JSON). Each URL is fetched once to warm up, then ``--repeat`` times; the
median is reported against the target (200 ms).

    python benchmarks/browse_bench.py --events 1000000 --db /tmp/events-1m.db
"""
import argparse
import asyncio
import os
import statistics
import sqlite3
import sys
import time
from pathlib import Path

# Synthetic stores are a test fixture: tests/synthetic.py, not the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from hueyscope.browse.app import make_datasette, store_names
from hueyscope.browse.metadata import TABLES
from hueyscope.events.queries import QUERIES
from hueyscope.events.schema import open_event_store
from synthetic import build_synthetic  # noqa: E402

TARGET_MS = 200


def urls(db_name, path):
    """(label, url) of every page measured."""
    conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    # A task id with a long history (retried several times).
    task_id = conn.execute(
        "select task_id from tasks where attempts > 2 order by finished desc limit 1"
    ).fetchone()[0]
    # The busiest task name: filters by task walk the most rows for it.
    task = conn.execute(
        "select task from tasks group by task order by count(*) desc limit 1"
    ).fetchone()[0]
    # The last day of recorded history.
    day = int(conn.execute("select max(finished) from tasks").fetchone()[0]) - 86400
    conn.close()
    out = []
    for name in QUERIES:
        extra = "&task_id=%s" % task_id if name == "task_history" else ""
        out.append(("query %s" % name, "/%s/%s.json?_shape=objects%s" % (
            db_name, name, extra)))
    for name, param, value, label in (
            ("latency_percentiles", "since", day, "since 1 day"),
            ("slowest_tasks", "task", task, "task=" + task),
            ("recent_failures", "task", task, "task=" + task),
            ("retry_chains", "task", task, "task=" + task),
            ("throughput_per_hour", "task", task, "task=" + task),
            ("throughput_per_minute", "task", task, "task=" + task)):
        out.append(("query %s (%s)" % (name, label), "/%s/%s.json?_shape=objects&%s=%s" % (
            db_name, name, param, value)))
    for table in TABLES:
        out.append(("table %s (html)" % table, "/%s/%s" % (db_name, table)))
        out.append(("table %s (json)" % table, "/%s/%s.json" % (db_name, table)))
    return out


async def measure(ds, url, repeat):
    response = await ds.client.get(url)  # warm-up
    if response.status_code != 200:
        raise SystemExit("%s -> %s: %s" % (url, response.status_code,
                                           response.text[:300]))
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        response = await ds.client.get(url)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200
    timed_out = False
    if ".json" in url:
        timed_out = bool(response.json().get("facets_timed_out"))
    return statistics.median(times), max(times), timed_out


async def main_async(args):
    ds = make_datasette([args.db])
    name = store_names(ds)[0]
    rows = []
    for label, url in urls(name, args.db):
        median, worst, timed_out = await measure(ds, url, args.repeat)
        rows.append((label, median, worst, timed_out))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--db", default="/tmp/hueyscope-bench/events-1m.db")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if not os.path.exists(args.db):
        os.makedirs(os.path.dirname(os.path.abspath(args.db)), exist_ok=True)
        start = time.perf_counter()
        build_synthetic(args.db, events=args.events)
        print("built %s (%d events) in %.1f s" % (
            args.db, args.events, time.perf_counter() - start))
    else:
        # Bring an older store up to date (new indexes come as migrations).
        open_event_store(args.db, create=False).close()
    conn = sqlite3.connect("file:%s?mode=ro" % args.db, uri=True)
    counts = {t: conn.execute("select count(*) from [%s]" % t).fetchone()[0]
              for t in ("events", "tasks")}
    conn.close()
    print("store: %s: %d events, %d tasks; median of %d warm runs\n" % (
        args.db, counts["events"], counts["tasks"], args.repeat))
    rows = asyncio.run(main_async(args))
    width = max(len(r[0]) for r in rows)
    print("%-*s  %9s  %9s  %s" % (width, "page", "median", "max", "target"))
    over = 0
    for label, median, worst, timed_out in rows:
        ok = median <= TARGET_MS and not timed_out
        over += not ok
        print("%-*s  %7.1f ms  %6.1f ms  %s%s" % (
            width, label, median, worst, "ok" if ok else "OVER",
            " (timed out)" if timed_out else ""))
    print("\n%d of %d pages within %d ms" % (len(rows) - over, len(rows), TARGET_MS))
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
