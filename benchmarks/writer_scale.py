"""How fast the writer stores events as the event store grows.

Fills a fresh store through the real flush path (``writer.Store.write``, the
same code the recorder's writer thread runs) in batches of 5000 events, the
signals of finished tasks (enqueued, executing, complete), and prints the
rate of every step of about ``--step`` events (the clock runs around
``Store.write``: building rows and the SQL; the recorder's ``plain`` step
is done beforehand). Two stores side by side, batch by
batch in one run: the schema as it is, and the same schema plus an index on
``events (task_id, ts)`` -- the random-uuid index ``events.task_seq``
replaced (schema.m003_task_seq) -- so the ratio shows what that change buys
as the store grows.

    python benchmarks/writer_scale.py                  # to 1,200,000 events
    python benchmarks/writer_scale.py --events 600000 --step 200000
"""
import argparse
import os
import sqlite3
import sys
import tempfile
import time

from huey import MemoryHuey

from hueyscope.bench import finished_task
from hueyscope.events import writer
from hueyscope.events.recorder import Recorder, plain

BATCH = 5000
VARIANTS = ("task_seq", "task_id index")


def batches(total):
    """Plain tuples of finished tasks, one list per batch, one second apart."""
    huey = MemoryHuey("bench")

    @huey.task()
    def noop(i):
        return i

    now = time.time() - total / BATCH
    for _ in range(total // BATCH):
        items = [s for i in range(BATCH // 3)
                 for s in finished_task(noop.s(i), now)]
        now += 1
        yield [plain(item, True, (), 2000) for item in items]


def open_store(folder, variant):
    path = os.path.join(folder, variant.replace(" ", "_") + ".db")
    recorder = Recorder(MemoryHuey("bench"), path)
    recorder.begin_run(role="bench")
    recorder.flush()  # schema and run row exist before the clock runs
    if variant == "task_id index":
        with sqlite3.connect(path) as conn:
            conn.execute("create index idx_events_task_id_ts "
                         "on events (task_id, ts)")
    return writer.Store(path), recorder.run_id


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_200_000)
    parser.add_argument("--step", type=int, default=200_000)
    args = parser.parse_args()
    if args.events < BATCH or args.step < BATCH:
        parser.error("--events and --step must be at least %d" % BATCH)
    with tempfile.TemporaryDirectory(prefix="hueyscope-writer-") as folder:
        stores = {v: open_store(folder, v) for v in VARIANTS}
        spent = dict.fromkeys(VARIANTS, 0.0)
        written = since = 0
        print("%-22s %14s %16s %7s" % ("events in the store", VARIANTS[0],
                                       VARIANTS[1], "ratio"))
        for plains in batches(args.events):
            for variant, (store, run_id) in stores.items():
                start = time.perf_counter()
                store.write(plains, None, [], 0, run_id, "bench-host", 1, "bench")
                spent[variant] += time.perf_counter() - start
            written += len(plains)
            if written - since >= args.step or written + len(plains) > args.events:
                rates = [(written - since) / spent[v] for v in VARIANTS]
                print("%-22s %8.0f ev/s %10.0f ev/s %6.2fx" % (
                    "%dk-%dk" % (since // 1000, written // 1000),
                    rates[0], rates[1], rates[0] / rates[1]))
                sys.stdout.flush()
                since, spent = written, dict.fromkeys(VARIANTS, 0.0)
        for store, _ in stores.values():
            if store.dropped:
                raise SystemExit("the writer dropped %d events" % store.dropped)


if __name__ == "__main__":
    main()
