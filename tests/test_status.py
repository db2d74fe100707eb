"""``hueyscope status``: read-only counts of the queue file."""
import hashlib
import json
import re
import signal
import sqlite3
import subprocess
import sys

from conftest import assert_one_line_error, wait_until


def status(cli):
    result = cli.run("status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["queues"]["hueyscope"]


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_counts_pending_then_results(cli):
    assert cli.run("produce", "mixed").returncode == 0
    assert cli.run("produce", "schedule").returncode == 0
    before = status(cli)
    # Delayed tasks wait in the queue until a consumer moves them to the schedule.
    assert before == {"pending": 10, "scheduled": 0, "next_due": None,
                      "results": 0, "revoked": 1, "locks": [],
                      # a leased queue: nothing taken yet
                      "leases": [], "lock_holders": [], "parked": 0,
                      "paused": [], "unique_keys": 0, "slots": []}
    text = cli.run("status")
    assert re.search(r"pending +10 ", text.stdout), text.stdout
    assert "none held" in text.stdout
    consumer = cli.start("consume", "--no-periodic", "--max-delay", "0.2",
                         name="consumer")
    # The revoked and the expired task leave no result: wait for the queue
    # to be empty as well, not only for the results.
    wait_until(lambda: (lambda s: s["results"] == 8 and s["pending"] == 0
                        and s["scheduled"] == 0 and s["leases"] == [])(status(cli)),
               timeout=60, message="8 results (7 mixed + 1 delayed), nothing left")
    assert consumer.stop(signal.SIGTERM) == 0
    after = status(cli)
    assert after["pending"] == 0 and after["scheduled"] == 0


def test_shows_a_lock_while_a_locked_job_runs(cli):
    # The demo's lock, held by a live process for as long as the test looks
    # (a locked job would hold it a second: too short on a busy machine).
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from hueyscope.demo_tasks import huey; "
         "lock = huey.lock_task('demo:daily-sync'); lock.acquire(); "
         "print('held', flush=True); sys.stdin.read(); lock.release()"],
        cwd=cli.folder, env=cli.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert status(cli)["locks"] == ["demo:daily-sync"]
        assert status(cli)["lock_holders"][0]["pid"] == holder.pid
        assert "demo:daily-sync" in cli.run("status").stdout
    finally:
        holder.stdin.close()
        holder.wait(30)
    assert "demo:daily-sync" not in cli.run("status", "--json").stdout


def test_never_writes_the_queue_file(cli):
    assert cli.run("produce", "pipeline").returncode == 0
    conn = sqlite3.connect(cli.queue)
    conn.execute("pragma wal_checkpoint(truncate)")
    conn.close()
    before = digest(cli.queue)
    status(cli)
    assert digest(cli.queue) == before


def test_refuses_files_that_are_not_a_huey_queue(cli):
    missing = cli.run("status", "--queue", "nothere.db")
    assert_one_line_error(missing)
    assert "no queue at nothere.db" in missing.stderr
    other = cli.folder / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("create table notes (body text)")
    conn.commit()
    conn.close()
    before = digest(other)
    result = cli.run("status", "--queue", str(other))
    assert_one_line_error(result)
    assert "not a huey queue" in result.stderr
    assert digest(other) == before


def test_leaves_no_wal_or_shm_beside_a_queue_nobody_has_open(cli):
    assert cli.run("produce", "mixed").returncode == 0
    conn = sqlite3.connect(cli.queue)
    conn.execute("pragma wal_checkpoint(truncate)")
    conn.close()  # the last connection: it removes the -wal and -shm
    names = sorted(p.name for p in cli.folder.iterdir())
    assert "queue.db-wal" not in names
    before = digest(cli.queue)
    assert status(cli)["pending"] == 7
    assert "pending" in cli.run("status").stdout
    assert sorted(p.name for p in cli.folder.iterdir()) == names
    assert digest(cli.queue) == before


def test_offers_only_the_options_it_reads(cli):
    help_text = cli.run("status", "--help").stdout
    for option in ("--queue", "--app", "--json", "--lease-timeout", "--events"):
        assert option in help_text
    for option in ("--durability", "--delivery"):
        assert option not in help_text
