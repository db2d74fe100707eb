"""What a writer process costs a short-lived producer, side by side.

A producer process that imports an app, enqueues N tasks and exits, timed
from start to exit, with the recorder writing through its writer process
(as shipped) and from the producer's own process (``writer_process=False``),
in alternating order; medians. The event store exists already, as it does
for every producer but the first.

    python benchmarks/producer_start.py                # 1 task, 15 rounds
    python benchmarks/producer_start.py --tasks 100 --rounds 9
"""
import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

APP = '''
import os
import hueyscope
from hueyscope.queue import make_huey
from hueyscope.settings import Settings

huey = make_huey(Settings.build())
hueyscope.attach(huey, writer_process=os.environ["BENCH_WRITER"] == "process")


@huey.task()
def noop(i):
    return i
'''
MODES = ("process", "in-process")


def run(folder, mode, tasks):
    """Seconds for one producer process in ``mode`` to enqueue ``tasks`` and exit."""
    env = dict(os.environ, PYTHONPATH=folder, BENCH_WRITER=mode,
               HUEYSCOPE_QUEUE=os.path.join(folder, mode + ".db"),
               HUEYSCOPE_EVENTS=os.path.join(folder, mode + "-events.db"))
    code = "import benchapp; [benchapp.noop(i) for i in range(%d)]" % tasks
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, cwd=folder,
                   check=True)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hueyscope-producer-") as folder:
        with open(os.path.join(folder, "benchapp.py"), "w") as f:
            f.write(APP)
        for mode in MODES:  # the stores exist before the clock runs
            run(folder, mode, 1)
        times = {mode: [] for mode in MODES}
        for r in range(args.rounds):
            for mode in (MODES if r % 2 == 0 else MODES[::-1]):
                times[mode].append(run(folder, mode, args.tasks))
        for mode in MODES:
            events = sqlite3.connect(os.path.join(
                folder, mode + "-events.db")).execute(
                "select count(*) from events").fetchone()[0]
            assert events == 1 + args.rounds * args.tasks, (mode, events)
    print("producer enqueuing %d task(s) and exiting, %d rounds, medians:"
          % (args.tasks, args.rounds))
    for mode in MODES:
        print("  %-10s %.3f s  (%s)" % (mode, statistics.median(times[mode]),
                                       " ".join("%.2f" % t for t in times[mode])))
    print("  writer process costs %+.3f s" % (
        statistics.median(times["process"]) - statistics.median(times["in-process"])))


if __name__ == "__main__":
    main()
