"""When the event store fails under running processes, the record says so.

Three faults, each on real files under real ``hueyscope consume`` and
producer processes:

- the store deleted while a consumer writes it: the consumer notices, logs,
  creates it again and its run says so (``store_recreated``,
  ``events_lost``); later events are in the new store;
- the store, its WAL and its WAL index made immutable (``chattr +i``):
  SQLite's map of the WAL index then faults with SIGBUS in every process
  that has it mapped. Consumers and producers run on and exit normally,
  the events they could not write are counted as dropped, and recording
  resumes when the files are writable again;
- the store on a full 2 MB tmpfs: the WAL stays small, every event is
  either written or counted as dropped, and recording resumes once there
  is room again.

The app writes with ``give_up_after=1`` so that the store gives up on a
batch in a second rather than a minute.
"""
import os
import re
import signal
import subprocess
import sys
import uuid

import pytest

from conftest import cli_env, query, scalar, start_cli, wait_until

FAULT_APP = '''
import hueyscope
from hueyscope.queue import make_huey
from hueyscope.settings import Settings

huey = make_huey(Settings.build())
recorder = hueyscope.attach(huey, give_up_after=1.0, flush_interval=0.05)


@huey.task()
def double(x):
    return 2 * x
'''

# A producer that keeps its store open: it records one task, lets the test
# know, and enqueues the rest once the test has broken the store.
HOLDING_PRODUCER = '''
import os, sys, time
import faultapp

faultapp.double(-1)
assert faultapp.recorder.flush(10)
open("held", "w").close()
while not os.path.exists("go"):
    time.sleep(0.02)
for i in range(int(sys.argv[1]), int(sys.argv[2])):
    faultapp.double(i)
'''


class App:
    """faultapp.py in a folder, its consumer and producers as processes."""

    def __init__(self, folder, events):
        self.folder = folder
        self.queue = folder / "queue.db"
        self.events = events
        (folder / "faultapp.py").write_text(FAULT_APP)
        (folder / "holding.py").write_text(HOLDING_PRODUCER)
        self.env = cli_env(folder, PYTHONPATH=folder, HUEYSCOPE_EVENTS=events)
        self.consumer = None

    def start_consumer(self, worker_type="thread"):
        self.consumer = start_cli(
            ["consume", "--app", "faultapp:huey", "--workers", "2",
             "--worker-type", worker_type, "--no-periodic",
             "--max-delay", "0.05", "--heartbeat-every", "0.2"],
            self.folder, env=self.env, name="consumer")
        try:
            wait_until(lambda: scalar(self.events, "select count(*) from "
                                      "runs where role = 'consumer'")
                       or self.consumer.proc.poll() is not None,
                       message="the consumer's run in the store")
            assert self.consumer.proc.poll() is None, self.consumer.describe()
        except BaseException:
            self.consumer.kill()
            raise
        return self.consumer

    def produce(self, first, last, **env):
        """Enqueue double(first..last-1) from a producer process of its own."""
        return subprocess.run(
            [sys.executable, "-c", "import sys, faultapp; "
             "[faultapp.double(i) for i in range(%d, %d)]" % (first, last)],
            cwd=self.folder, env=dict(self.env, **env), capture_output=True,
            text=True, timeout=60)

    def results(self):
        """Results stored in the queue: tasks the consumer ran to the end."""
        return scalar(self.queue, "select count(*) from kv") or 0

    def wait_results(self, n, message):
        wait_until(lambda: self.results() >= n
                   or self.consumer.proc.poll() is not None,
                   timeout=60, message=message)
        assert self.consumer.proc.poll() is None, self.consumer.describe()

    def complete_in_store(self):
        return scalar(self.events, "select count(*) from events "
                      "where signal = 'complete'") or 0

    def consumer_run(self):
        return query(self.events, "select events_written, events_dropped, "
                     "stop_reason, stopped, store_recreated, events_lost, id "
                     "from runs where role = 'consumer'")


@pytest.mark.timeout(90)
def test_a_store_deleted_under_a_consumer_is_created_again_and_says_so(tmp_path):
    app = App(tmp_path, tmp_path / "events.db")
    consumer = app.start_consumer()
    try:
        assert app.produce(0, 20).returncode == 0
        wait_until(lambda: app.complete_in_store() == 20,
                   message="the first tasks recorded")
        for suffix in ("", "-wal", "-shm"):
            os.unlink("%s%s" % (app.events, suffix))
        # A producer started now creates a new store; the consumer must
        # write into that one, not into the file it still has open.
        assert app.produce(20, 40).returncode == 0
        wait_until(lambda: app.complete_in_store() == 20
                   and scalar(app.events, "select count(*) from tasks where "
                              "status = 'complete'") == 20
                   or consumer.proc.poll() is not None,
                   message="the later tasks recorded in the new store")
        assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()
    finally:
        consumer.kill()
    assert "was deleted or replaced while open" in consumer.stderr
    statuses = dict(query(app.events, "select status, count(*) from tasks "
                          "group by 1"))
    assert statuses == {"complete": 20}
    signals = dict(query(app.events, "select signal, count(*) from events "
                         "group by 1"))
    assert signals == {"enqueued": 20, "executing": 20, "complete": 20}
    (written, dropped, reason, stopped, recreated, lost, _), = app.consumer_run()
    # The run is restated in the new store, which says when it was
    # recreated and that the 40 events of the first tasks went with the old.
    assert (written, dropped, reason, lost) == (40, 0, "graceful", 40)
    assert recreated is not None and stopped is not None


def chattr(flag, *paths):
    """chattr ``flag`` on ``paths``; skip the test when it cannot be done here."""
    try:
        result = subprocess.run(["chattr", flag, *map(str, paths)],
                                capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        pytest.skip("chattr is not installed (e2fsprogs)")
    if result.returncode != 0:
        if flag == "+i" and ("not permitted" in result.stderr
                             or "not supported" in result.stderr):
            pytest.skip("chattr +i is refused here (needs root and "
                        "CAP_LINUX_IMMUTABLE on a filesystem with the "
                        "immutable flag): %s" % result.stderr.strip())
        pytest.fail(result.stderr)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_an_immutable_store_kills_no_process_and_drops_are_counted(
        tmp_path, worker_type):
    """chattr +i on events.db, -wal and -shm: a process that has the -shm
    file mapped gets SIGBUS at its next write to it. Only writer processes
    map it: consumers (and their worker processes, each with a writer of
    its own) and producers exit normally, twice over."""
    app = App(tmp_path, tmp_path / "events.db")
    frozen = [app.events, tmp_path / "events.db-wal", tmp_path / "events.db-shm"]
    consumer = app.start_consumer(worker_type)
    holder = None
    try:
        assert app.produce(0, 10).returncode == 0
        app.wait_results(10, "the first tasks")
        wait_until(lambda: app.complete_in_store() == 10,
                   message="the first tasks recorded")
        for cycle in (1, 2):
            # A producer with the store open while its files are frozen:
            # it used to die of SIGBUS (exit 135).
            holder = subprocess.Popen(
                [sys.executable, "holding.py", str(100 * cycle),
                 str(100 * cycle + 5)], cwd=tmp_path, env=app.env,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            wait_until(lambda: (tmp_path / "held").exists()
                       or holder.poll() is not None,
                       message="the producer to have the store open")
            chattr("+i", *frozen)
            try:
                (tmp_path / "go").touch()
                out, err = holder.communicate(timeout=60)
                assert holder.returncode == 0, err
                assert DROPPED.search(err), err
                produced = app.produce(10 * cycle, 10 * cycle + 10)
                assert produced.returncode == 0, produced.stderr
                assert DROPPED.search(produced.stderr), produced.stderr
                app.wait_results(10 + 16 * cycle, "tasks to run on a frozen store")
                wait_until(lambda: len(DROPPED.findall(consumer.stderr)) >= cycle
                           or consumer.proc.poll() is not None,
                           message="the consumer to count its drops")
            finally:
                subprocess.run(["chattr", "-i", *map(str, frozen)],
                               capture_output=True)
            (tmp_path / "held").unlink()
            (tmp_path / "go").unlink()
            # Writable again: recording resumes.
            before = app.complete_in_store()
            assert app.produce(50 + cycle, 51 + cycle).returncode == 0
            wait_until(lambda: app.complete_in_store() > before
                       or consumer.proc.poll() is not None,
                       message="recording to resume")
        assert consumer.proc.poll() is None, consumer.describe()
        assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()
    finally:
        subprocess.run(["chattr", "-i", *map(str, frozen)], capture_output=True)
        if holder is not None and holder.poll() is None:
            holder.kill()
        consumer.kill()
    ran = app.results()
    written, dropped, reason, stopped, _, _, run_id = app.consumer_run()[0]
    assert reason == "graceful" and stopped is not None
    assert written == scalar(app.events, "select count(*) from events "
                             "where run_id = ?", (run_id,))
    # Each task ran is an executing and a complete event: written or counted.
    assert dropped > 0 and written + dropped == 2 * ran, (written, dropped, ran)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs mounted in tmp_path/disk; skipped where mounting is refused."""
    disk = tmp_path / "disk"
    disk.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m",
                             "hueyscope-test-%s" % uuid.uuid4().hex[:8],
                             str(disk)], capture_output=True, text=True,
                            timeout=10)
    if result.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root with "
                    "CAP_SYS_ADMIN): %s" % result.stderr.strip())
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=10)


TASKS = 400
DROPPED = re.compile(r"[1-9][0-9]* event\(s\) not recorded")


def free_bytes(path):
    fs = os.statvfs(path)
    return fs.f_bavail * fs.f_frsize


@pytest.mark.timeout(120)
def test_a_full_disk_bounds_the_wal_counts_every_drop_and_recording_resumes(
        tmp_path, small_disk):
    events = small_disk / "events.db"
    app = App(tmp_path, events)
    largest_wal = [0]

    def watching_the_wal(condition):
        # The WAL's largest size, seen while waiting for ``condition`` (it
        # is deleted whenever the writer's connection closes).
        def check():
            try:
                size = os.stat("%s-wal" % events).st_size
            except FileNotFoundError:
                size = 0
            largest_wal[0] = max(largest_wal[0], size)
            return condition() or app.consumer.proc.poll() is not None
        return check

    consumer = app.start_consumer()
    try:
        # Leave the store about 100 kB: room for a few hundred tasks' events.
        ballast = small_disk / "ballast"
        ballast.write_bytes(b"\0" * (free_bytes(small_disk) - 100_000))
        # The producers record elsewhere: only the consumer fills the disk,
        # so its run's counts are the whole story.
        elsewhere = {"HUEYSCOPE_EVENTS": str(tmp_path / "producer-events.db")}
        assert app.produce(0, TASKS, **elsewhere).returncode == 0
        wait_until(watching_the_wal(lambda: app.results() >= TASKS
                                    and DROPPED.search(consumer.stderr)),
                   timeout=60, message="the tasks to run and drops counted")
        assert consumer.proc.poll() is None, consumer.describe()
        ballast.unlink()
        before = app.complete_in_store()
        assert app.produce(TASKS, TASKS + 50, **elsewhere).returncode == 0
        wait_until(watching_the_wal(
            lambda: app.results() >= TASKS + 50
            and app.complete_in_store() >= before + 50),
            message="recording to resume once there is room")
        assert consumer.proc.poll() is None, consumer.describe()
        assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()
    finally:
        consumer.kill()
    written, dropped, reason, stopped, _, _, run_id = app.consumer_run()[0]
    assert reason == "graceful" and stopped is not None
    assert written == scalar(events, "select count(*) from events "
                             "where run_id = ?", (run_id,))
    assert dropped > 0 and written + dropped == 2 * (TASKS + 50), (
        written, dropped)
    # The WAL stayed a small part of the disk -- checkpointed at a
    # sixteenth of it, plus the batch that crossed the line, plus what the
    # test's own reads held back -- and the events are in the database
    # itself (a WAL allowed 40 MB took the whole disk, and the database
    # stayed one page).
    assert 0 < largest_wal[0] < 2 * 1024 * 1024 // 5, largest_wal
    assert events.stat().st_size > 64 * 1024
