"""What capturing a signal costs the recorder: its plain row, redaction included.

    python benchmarks/capture_bench.py [--signals 20000] [--repeat 5]

A MemoryHuey with the recorder attached (nothing written: the writer never
runs) enqueues tasks of three shapes; the signals it buffered are then
turned into the plain rows the writer takes, as the writer thread does, and
timed. Prints microseconds per signal for each shape, the best of
``--repeat`` runs. Run it with two checkouts' interpreters, alternately, to
compare them: it uses no hueyscope API beyond ``attach``.
"""
import argparse
import tempfile
import time

from huey import MemoryHuey

import hueyscope

SHAPES = {
    "plain args": ((1, 2), {}),
    "typical kwargs": ((), {
        "user_id": 42, "url": "https://api.example.com/v1/items?page=3",
        "headers": {"Accept": "application/json", "X-Request-Id": "abc-123"},
        "options": {"retries": 3, "timeout": 2.5, "tags": ["a", "b", "c"]},
        "note": "a short free-text note of a few words"}),
    "credentials": ((), {
        "dsn": "postgresql://app:hunter2@db.internal/app",
        "headers": {"Authorization": "Bearer abc.def.ghi"},
        "api_key": "k-123456", "payload": {"password": "pw", "name": "bob"}}),
}


def time_shape(args, kwargs, signals, repeat):
    huey = MemoryHuey("capture-bench")

    @huey.task()
    def job(*a, **k):
        return None

    with tempfile.TemporaryDirectory() as folder:
        recorder = hueyscope.attach(huey, events=folder + "/events.db",
                                    flush_interval=3600, writer_process=False)
        for _ in range(signals):
            job(*args, **kwargs)
        batch = list(recorder._buffer)
        best = None
        for _ in range(repeat):
            start = time.perf_counter()
            recorder._plains(batch)
            elapsed = time.perf_counter() - start
            best = elapsed if best is None else min(best, elapsed)
        recorder._buffer.clear()
    return best / len(batch) * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--signals", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()
    for name, (args, kwargs) in SHAPES.items():
        print("%-16s %6.2f us per signal" % (
            name, time_shape(args, kwargs, options.signals, options.repeat)))


if __name__ == "__main__":
    main()
