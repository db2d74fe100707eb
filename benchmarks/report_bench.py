"""How long the static report takes, and how much memory, as the store grows.

Builds synthetic event stores (tests/synthetic.py) of each size, then
builds the report of each in a fresh child process, side by side in one run,
and reports wall time and the child's peak resident memory (ru_maxrss of
os.wait4's resource usage of that child). Each size is built
``--repeat`` times; the best time and the largest peak are reported.

    python benchmarks/report_bench.py                      # 100k and 1M events
    python benchmarks/report_bench.py --sizes 100000,1000000 --keep /tmp/bench
    python benchmarks/report_bench.py --sizes 1000000 --days 1   # a busy day

The stores cover 7 days by default: the charts draw 2-hour bars from the
hourly roll-ups. ``--days 1`` puts the events in one day, where the charts
count 15-minute buckets from the events themselves (the costlier path).

Targets (issue 4): 1,000,000 events in <= 10 s with <= 300 MB, and a cost
that grows linearly or better (the 1M/100k time ratio <= 10).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 10.0
TARGET_MB = 300

# Synthetic stores are a test fixture (tests/synthetic.py, not the package):
# the child finds it on the path given as its fifth argument.
TESTS = str(Path(__file__).resolve().parent.parent / "tests")
BUILD = """
import sys
sys.path.insert(0, sys.argv[5])
from synthetic import build_synthetic
build_synthetic(sys.argv[1], events=int(sys.argv[2]), seed=int(sys.argv[3]),
                days=int(sys.argv[4]))
"""

CHILD = """
import json, sys, time
from hueyscope.reports.builder import build_report
start = time.perf_counter()
build_report([sys.argv[1]], sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def time_report(store, out):
    """Build the report of ``store`` in a child; (seconds, wall, peak MB).

    os.wait4 returns the resource usage of that one child, so its peak RSS
    (ru_maxrss, KiB on Linux) is measured on its own, import included.
    """
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(store), str(out)],
                            stdout=subprocess.PIPE, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit("report build failed on %s" % store)
    return json.loads(output)["seconds"], wall, usage.ru_maxrss / 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000",
                        help="comma-separated event counts (default 100000,1000000)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--keep", metavar="FOLDER",
                        help="build (or reuse) the stores in FOLDER instead of a temp folder")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--days", type=int, default=7,
                        help="days of history the stores cover (default 7)")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    folder = Path(args.keep or tempfile.mkdtemp(prefix="report-bench-"))
    folder.mkdir(parents=True, exist_ok=True)

    stores = {}
    for n in sizes:
        # 7-day stores keep their old names, so --keep folders are reused.
        path = folder / ("events-%d.db" % n if args.days == 7 else
                         "events-%d-%dd.db" % (n, args.days))
        if not path.exists():
            # In a child, so this process stays small: a forked child's peak
            # RSS counts the parent's memory it started from.
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", BUILD, str(path), str(n),
                            str(args.seed), str(args.days), TESTS], check=True)
            print("built %s (%s events) in %.1f s" % (
                path, "{:,}".format(n), time.perf_counter() - start), file=sys.stderr)
        stores[n] = path

    results = []
    for n in sizes:
        best = best_wall = None
        peak = 0.0
        for i in range(args.repeat):
            seconds, wall, peak_mb = time_report(
                stores[n], folder / ("site-" + stores[n].stem))
            peak = max(peak, peak_mb)
            best = seconds if best is None else min(best, seconds)
            best_wall = wall if best_wall is None else min(best_wall, wall)
        size_mb = os.path.getsize(stores[n]) / 1e6
        results.append({"events": n, "seconds": best, "wall": best_wall,
                        "peak_mb": peak, "store_mb": size_mb})

    print("%12s %10s %10s %12s %10s %12s" % (
        "events", "store MB", "build s", "process s", "peak MB", "s per 100k"))
    for r in results:
        print("%12s %10.0f %10.2f %12.2f %10.0f %12.3f" % (
            "{:,}".format(r["events"]), r["store_mb"], r["seconds"], r["wall"],
            r["peak_mb"], r["seconds"] / r["events"] * 100_000))
    ok = True
    if len(results) > 1:
        small, big = results[0], results[-1]
        ratio = big["seconds"] / small["seconds"]
        scale = big["events"] / small["events"]
        print("time ratio %.1fx for %.0fx the events (linear or better: <= %.0fx)"
              % (ratio, scale, scale))
        ok &= ratio <= scale
    big = results[-1]
    if big["events"] >= 1_000_000:
        ok &= big["seconds"] <= TARGET_SECONDS and big["peak_mb"] <= TARGET_MB
        print("target at 1M events: <= %.0f s and <= %d MB: %s" % (
            TARGET_SECONDS, TARGET_MB, "met" if ok else "NOT met"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
