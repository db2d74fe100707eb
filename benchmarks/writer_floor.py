"""What bounds the writer: the same events with and without the indexes.

Four fresh stores are filled batch by batch in one run, 5000 events a batch
(the signals of finished tasks: enqueued, executing, complete), through the
writer's own steps: ``recorder.plain`` (a buffered signal to a plain tuple),
``writer.batch_rows`` (tuples to rows) and ``Store._write`` (the rows'
SQL in one transaction). One store has the schema as shipped; the others
have the secondary indexes of ``events``, of ``tasks``, or of both dropped.
Per store it prints events/s and the microseconds per event of each step,
so the line without any index shows what no index choice can go below.

    python benchmarks/writer_floor.py                  # 300,000 events a store
    python benchmarks/writer_floor.py --events 150000 --split

With ``--split`` every enqueue comes in a batch before its execution, so
each task row is inserted by one batch and updated by another, as when a
producer and a consumer record it.
"""
import argparse
import gc
import os
import sqlite3
import tempfile
import time

from huey import MemoryHuey

from hueyscope.bench import buffered_signals
from hueyscope.events import writer
from hueyscope.events.recorder import Recorder, plain

BATCH = 5000
# Store name -> prefixes of the index names dropped from it.
VARIANTS = {
    "as shipped": (),
    "no events indexes": ("idx_events_",),
    "no tasks indexes": ("idx_tasks_",),
    "no secondary index": ("idx_events_", "idx_tasks_"),
}
STEPS = ("plain", "batch_rows", "_write")


def buffered(total, split):
    """The buffered signals of ``total // 3`` finished tasks, in batches."""
    items = buffered_signals(total // 3, split)
    return [items[i:i + BATCH] for i in range(0, len(items), BATCH)]


def open_store(folder, name, dropped):
    path = os.path.join(folder, name.replace(" ", "_") + ".db")
    recorder = Recorder(MemoryHuey("bench"), path)
    recorder.begin_run(role="bench")
    recorder.flush()  # schema and run row exist before the clock runs
    with sqlite3.connect(path) as conn:
        names = [n for n, in conn.execute(
            "select name from sqlite_master where type = 'index' "
            "and sql is not null")]
        for index in names:
            if index.startswith(dropped):
                conn.execute("drop index %s" % index)
    return writer.Store(path), recorder


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--split", action="store_true",
                        help="enqueues and executions in separate batches")
    args = parser.parse_args()
    if args.events < BATCH:
        parser.error("--events must be at least %d" % BATCH)
    batches = buffered(args.events, args.split)
    events = sum(len(b) for b in batches)
    # The prebuilt signals are not garbage: keep the collector from walking
    # them again and again, at whichever store's turn it happens to be.
    gc.freeze()
    with tempfile.TemporaryDirectory(prefix="hueyscope-writer-") as folder:
        stores = {name: open_store(folder, name, dropped)
                  for name, dropped in VARIANTS.items()}
        spent = {name: dict.fromkeys(STEPS, 0.0) for name in VARIANTS}
        for batch in batches:
            for name, (store, recorder) in stores.items():
                t0 = time.perf_counter()
                plains = [plain(item, True, recorder.redact, 2000)
                          for item in batch]
                t1 = time.perf_counter()
                rows = writer.batch_rows(plains, recorder.run_id,
                                         "bench-host", 1, "bench")
                t2 = time.perf_counter()
                store._write(rows, [])
                t3 = time.perf_counter()
                steps = spent[name]
                steps["plain"] += t1 - t0
                steps["batch_rows"] += t2 - t1
                steps["_write"] += t3 - t2
        print("%d events a store, %s; us per event" % (
            events, "each task's signals split over two batches" if args.split
            else "each task's signals in one batch"))
        print("%-20s %10s %7s %11s %8s" % ("store", "events/s", "plain",
                                           "batch_rows", "_write"))
        for name in VARIANTS:
            steps = spent[name]
            print("%-20s %10.0f %7.2f %11.2f %8.2f" % (
                name, events / sum(steps.values()),
                *(steps[s] / events * 1e6 for s in STEPS)))
            written = stores[name][0].written
            if written != events:
                raise SystemExit("%s: wrote %d of %d events" % (
                    name, written, events))


if __name__ == "__main__":
    main()
