"""What each part of the recorder costs the drain, side by side.

The ``hueyscope bench`` workload (N small tasks enqueued, then drained by 4
thread workers from a FULL-durability SQLite queue), run bare and with the
recorder stopped after each of its steps. From the drain on, the writer
thread's store does only part of the work:

    buffer      the handler buffers each signal and the writer thread turns
                it into a plain tuple (``recorder.plain``); nothing is written
    rows        ... and builds the batch's rows (``writer.batch_rows``)
    in-process  ... and writes them itself (``writer.Store``), as the
                recorder does with ``writer_process=False``
    recorder    as shipped for a consumer: the writer thread hands the plain
                tuples to a writer process, which builds the rows and writes
                them (``writer_process.ProcessStore``)

Each round runs every variant once, in a fresh child process, in rotating
order; medians are quoted as ratios to bare.

    python benchmarks/drain_parts.py                  # 3000 tasks, 9 rounds
    python benchmarks/drain_parts.py --tasks 5000 --rounds 15
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile

from hueyscope import bench
from hueyscope.events import writer

VARIANTS = ("bare", "buffer", "rows", "in-process", "recorder")


class PartStore(writer.Store):
    """A store that does the writer's work up to ``part`` in this process
    (all of it for "in-process"), and counts the rest as written."""

    def __init__(self, path, part):
        super().__init__(path)
        self.part = part

    def write(self, plains, run_row, samples, dropped, run_id, host, pid, queue):
        if self.part == "in-process":
            return super().write(plains, run_row, samples, dropped, run_id,
                                 host, pid, queue)
        if self.part == "rows":
            writer.batch_rows(plains, run_id, host, pid, queue)
        self.written += len(plains)


def child(variant, tasks):
    """One variant in this process: drain seconds."""
    def stop_early(recorder):
        if variant in ("buffer", "rows", "in-process"):
            recorder.flush()  # the enqueues are written for real
            store = PartStore(recorder.path, variant)
            store.written = recorder._store.written
            recorder._store.close()
            recorder._store = store

    with tempfile.TemporaryDirectory(prefix="hueyscope-drain-") as folder:
        return bench.run_variant("bare" if variant == "bare" else "hueyscope",
                                 tasks, 4, "thread", "full", folder,
                                 before_drain=stop_early)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    if args.tasks < 1 or args.rounds < 1:
        parser.error("--tasks and --rounds must be at least 1")
    code = ("import json, sys; sys.path.insert(0, %r); import drain_parts; "
            "print(json.dumps(drain_parts.child(*json.loads(sys.argv[1]))))"
            % sys.path[0])
    times = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        shift = r % len(VARIANTS)
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            proc = subprocess.run(
                [sys.executable, "-c", code, json.dumps([variant, args.tasks])],
                capture_output=True, text=True, timeout=900)
            if proc.returncode:
                raise SystemExit("%s failed: %s" % (variant, proc.stderr[-2000:]))
            times[variant].append(float(proc.stdout.split()[-1]))
    base = statistics.median(times["bare"])
    print("%d tasks, 4 thread workers, %d rounds" % (args.tasks, args.rounds))
    print("%-9s %8s %7s   %s" % ("variant", "tasks/s", "ratio", "per round"))
    for variant in VARIANTS:
        median = statistics.median(times[variant])
        print("%-9s %8.0f %6.3fx   %s" % (
            variant, args.tasks / median, base / median,
            " ".join("%.0f" % (args.tasks / t) for t in times[variant])))


if __name__ == "__main__":
    main()
