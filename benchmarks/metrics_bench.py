"""How long a scrape of ``hueyscope metrics`` takes on a large event store.

Builds (or reuses) a synthetic store (tests/synthetic.py), starts
``hueyscope metrics --serve 127.0.0.1:0`` on it as a process, and times
``--repeat`` scrapes of /metrics over loopback, each a full computation in
SQL (``--min-interval 0``: nothing is cached between scrapes). Prints the median, the fastest and
the slowest, and the time the collector itself reports
(hueyscope_metrics_collect_seconds) at the median scrape.

    python benchmarks/metrics_bench.py --db /tmp/events-1m.db --repeat 15
"""
import argparse
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def build(path, events, seed):
    # Synthetic stores are a test fixture: tests/synthetic.py, not the package.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from synthetic import build_synthetic

    start = time.perf_counter()
    written = build_synthetic(path, events=events, seed=seed)
    print("built %s: %d events in %.1f s" % (path, written, time.perf_counter() - start))


def serve(path):
    """Start the command on ``path``; (process, URL) once it answers."""
    proc = subprocess.Popen(
        # --min-interval 0: every scrape a computation of its own.
        [sys.executable, "-m", "hueyscope", "metrics", "--serve", "127.0.0.1:0",
         "--min-interval", "0",
         # No queue beside a synthetic store: only the store is read.
         "--events", str(path), "--queue", str(Path(path).with_suffix(".queue.db"))],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    match = re.search(r"(http://\S+/metrics)", line)
    if not match:
        proc.kill()
        raise SystemExit("hueyscope metrics did not start: %r" % line)
    return proc, match.group(1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="/tmp/events-1m.db",
                        help="event store to scrape (built if missing)")
    parser.add_argument("--events", type=int, default=1_000_000,
                        help="events of the store built if --db is missing")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args(argv)
    if not Path(args.db).exists():
        build(args.db, args.events, args.seed)
    proc, url = serve(args.db)
    try:
        timings = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            with urllib.request.urlopen(url, timeout=60) as response:
                body = response.read().decode()
            timings.append((time.perf_counter() - start, body))
    finally:
        proc.terminate()
        proc.wait(30)
    seconds = sorted(t for t, _ in timings)
    median = statistics.median(seconds)
    body = min(timings, key=lambda t: abs(t[0] - median))[1]
    collect = float(re.search(r"^hueyscope_metrics_collect_seconds (\S+)$",
                              body, re.M).group(1))
    print("store %s (%d bytes of metrics, %d series)" % (
        args.db, len(body), sum(1 for line in body.splitlines()
                                if line and not line.startswith("#"))))
    print("scrape over HTTP: median %.3f s, fastest %.3f s, slowest %.3f s "
          "(%d scrapes); computed in %.3f s" % (
              median, seconds[0], seconds[-1], len(seconds), collect))


if __name__ == "__main__":
    main()
