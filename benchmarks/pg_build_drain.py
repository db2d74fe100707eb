"""Pipelines drained from PostgreSQL while the Huey is built again and again.

Every consumer start, producer and command builds the Huey, and building it
once took locks on huey's task table and the lease table in the opposite
order to the workers: builds failed with DeadlockDetected, workers were
chosen as deadlock victims, and a pipeline whose next step's enqueue was the
victim lost that step. This counts all of it on the current code:

- builds that failed (of ``--builds``, made by 4 processes at once);
- deadlocks in the consumer's log;
- pipelines lost after step 1 (step 1 ran, step 2 never did), read from the
  ledger the tasks write (tests/pg_faults_app.py);
- tasks the event store shows ``not-queued``.

    python benchmarks/pg_build_drain.py --pipelines 2000 --builds 60
    python benchmarks/pg_build_drain.py --dsn postgresql://127.0.0.1:5432/test

Runs in a schema of its own, dropped at the end.
"""
import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
BUILD = """
import sys
from hueyscope.queue import make_huey
from hueyscope.settings import Settings
failed = 0
for i in range(int(sys.argv[1])):
    try:
        make_huey(Settings.build(), name="pgfaults").storage.close()
    except Exception as exc:
        failed += 1
        print(exc, file=sys.stderr)
print(failed)
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", default="postgresql://127.0.0.1:5432/test")
    parser.add_argument("--pipelines", type=int, default=2000)
    parser.add_argument("--builds", type=int, default=60)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    import psycopg

    schema = "bench_" + uuid.uuid4().hex[:10]
    admin = psycopg.connect(args.dsn, autocommit=True)
    admin.execute("create schema %s" % schema)
    try:
        with tempfile.TemporaryDirectory() as folder:
            print(run(args, Path(folder), schema))
    finally:
        admin.execute("drop schema %s cascade" % schema)
        admin.close()


def run(args, folder, schema):
    env = dict(os.environ, PYTHONPATH=str(TESTS), LEDGER=str(folder / "ledger.txt"),
               HUEYSCOPE_QUEUE="%s?options=-csearch_path%%3D%s" % (args.dsn, schema),
               HUEYSCOPE_EVENTS=str(folder / "events.db"),
               HUEYSCOPE_APP="pg_faults_app:huey")
    subprocess.run([sys.executable, "-c", "import pg_faults_app as a; "
                    "a.pipelines(%d)" % args.pipelines], env=env, cwd=folder,
                   check=True)
    log = open(folder / "consumer.err", "w")
    consumer = subprocess.Popen(
        [Path(sys.executable).parent / "hueyscope", "consume", "--no-periodic",
         "-w", str(args.workers), "--max-delay", "0.1"],
        env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=log,
        start_new_session=True)
    started = time.monotonic()
    builders = [subprocess.Popen([sys.executable, "-c", BUILD, str(args.builds // 4)],
                                 env=env, cwd=folder, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True)
                for _ in range(4)]
    failed = sum(int(b.communicate()[0].strip() or 0) for b in builders)
    # Drained: every step 2 ran, or nothing has moved for 10 s.
    last, seen = time.monotonic(), -1
    while time.monotonic() - last < 10:
        done = len(kinds(folder, "step2"))
        if done == args.pipelines:
            break
        if done != seen:
            last, seen = time.monotonic(), done
        time.sleep(0.2)
    drained = time.monotonic() - started
    consumer.send_signal(signal.SIGTERM)
    consumer.wait(60)
    log.close()
    text = (folder / "consumer.err").read_text().lower()
    step1, step2 = kinds(folder, "step1"), kinds(folder, "step2")
    store = sqlite3.connect(folder / "events.db")
    not_queued = store.execute("select count(*) from tasks where "
                               "status = 'not-queued'").fetchone()[0]
    return ("builds failed %d/%d, deadlocks in the consumer log %d, pipelines "
            "lost after step 1 %d/%d, not-queued in the store %d, drained in "
            "%.1f s" % (failed, args.builds // 4 * 4, text.count("deadlock detected"),
                        len(step1 - step2), args.pipelines, not_queued, drained))


def kinds(folder, kind):
    try:
        with open(folder / "ledger.txt") as f:
            return {line.split()[2] for line in f if line.startswith(kind + " ")}
    except FileNotFoundError:
        return set()


if __name__ == "__main__":
    main()
