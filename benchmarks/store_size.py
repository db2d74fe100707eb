"""Bytes of event store per task: a real drain, measured on disk.

``hueyscope produce load --count N`` enqueues N quick_add tasks (the
smallest task of the demo catalogue, args ``[i, i]``), one ``hueyscope
consume`` process drains them, and once the store shows N complete tasks
the consumer is stopped with SIGTERM. The database file's size divided by
N is the cost of one task; the tables' shares come from SQLite's dbstat.
The write-ahead log (checkpointed at 40 MB at most) and the 256 kB reserve
file are a fixed cost, printed but not divided. Run once with arguments
recorded and once with ``--no-args``.

    python benchmarks/store_size.py                  # 20,000 tasks, both modes
    python benchmarks/store_size.py --tasks 5000 --modes no-args
"""
import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

HUEYSCOPE = os.path.join(os.path.dirname(sys.executable), "hueyscope")
MODES = {"args": (), "no-args": ("--no-args",)}
DAY = 86400


def count_complete(events):
    if not os.path.exists(events):
        return 0
    conn = sqlite3.connect("file:%s?mode=ro" % events, uri=True, timeout=30)
    try:
        return conn.execute(
            "select count(*) from tasks where status = 'complete'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def on_disk(path):
    """{file: bytes} of the store's files as the consumer left them."""
    folder = os.path.dirname(path)
    name = os.path.basename(path)
    return {f: os.path.getsize(os.path.join(folder, f))
            for f in sorted(os.listdir(folder)) if f.startswith(name)}


def tables(path):
    """{table or index: bytes} from dbstat, largest first (None without it)."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("select name, sum(pgsize) from dbstat group by name "
                            "order by 2 desc").fetchall()
    except sqlite3.OperationalError:
        return None
    finally:
        conn.close()
    return dict(rows)


def drain(folder, tasks, flags):
    env = dict(os.environ, HUEYSCOPE_QUEUE=os.path.join(folder, "queue.db"),
               HUEYSCOPE_EVENTS=os.path.join(folder, "events.db"),
               PYTHONUNBUFFERED="1")
    events = env["HUEYSCOPE_EVENTS"]
    subprocess.run([HUEYSCOPE, "produce", "load", "--count", str(tasks), *flags],
                   env=env, cwd=folder, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    started = time.monotonic()
    with open(os.path.join(folder, "consumer.log"), "w") as log:
        consumer = subprocess.Popen(
            [HUEYSCOPE, "consume", "--workers", "4", "--no-periodic", *flags],
            env=env, cwd=folder, stdout=log, stderr=log)
        try:
            while count_complete(events) < tasks:
                if consumer.poll() is not None:
                    raise SystemExit("consumer exited %s; see %s" % (
                        consumer.returncode, log.name))
                time.sleep(0.5)
            drained = time.monotonic() - started
            consumer.send_signal(signal.SIGTERM)
            consumer.wait(120)
        finally:
            if consumer.poll() is None:
                consumer.kill()
    return events, drained


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--modes", default="args,no-args")
    opts = parser.parse_args()
    for mode in opts.modes.split(","):
        with tempfile.TemporaryDirectory(prefix="store-size-") as folder:
            events, drained = drain(folder, opts.tasks, MODES[mode])
            files = on_disk(events)
            # The database file grows with the tasks; the WAL (checkpointed
            # at 40 MB at most) and the 256 kB reserve are a fixed cost.
            size = files["events.db"]
            per_task = size / opts.tasks
            print("%-8s %d tasks drained in %.0f s: events.db %.1f MB, %.0f "
                  "bytes per task; all files %.1f MB" % (
                      mode, opts.tasks, drained, size / 1e6, per_task,
                      sum(files.values()) / 1e6))
            print("         " + ", ".join("%s %.2f MB" % (f, n / 1e6)
                                           for f, n in files.items()))
            for rate in (10, 100, 1000):
                print("         at %4d tasks/s: %6.1f GB a day, %7.1f GB in 14 "
                      "days" % (rate, per_task * rate * DAY / 1e9,
                                per_task * rate * DAY * 14 / 1e9))
            breakdown = tables(events)
            if breakdown:
                total = sum(breakdown.values())
                print("         " + ", ".join(
                    "%s %.0f%%" % (name, 100.0 * n / total)
                    for name, n in list(breakdown.items())[:8]))


if __name__ == "__main__":
    main()
