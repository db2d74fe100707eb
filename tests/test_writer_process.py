"""Recording processes write their events through a child process
(events/writer_process.py).

Each test drives ``hueyscope consume`` and signals real processes: the
consumer's whole process group as a terminal's Ctrl-C does, the consumer
alone with SIGKILL, and the writer process itself with SIGKILL.
"""
import os
import signal
from pathlib import Path

import pytest

from conftest import query, scalar, wait_until

MIXED = 7  # tasks in one round of the mixed scenario


def writer_processes(parent_pid):
    """Pids of the writer processes whose parent is ``parent_pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent_pid and b"hueyscope.events.writer_process" in cmdline:
            found.append(int(entry.name))
    return found


def alive(pid):
    try:
        state = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_consumer(cli):
    return cli.start("consume", "--workers", "2", "--no-periodic",
                     "--max-delay", "0.1", name="consumer")


def run_round(cli, consumer, rounds_done):
    """Produce one mixed round and wait until the store has it complete."""
    assert cli.run("produce", "mixed").returncode == 0
    wait_until(lambda: cli.task_statuses().get("complete") == rounds_done * MIXED
               or consumer.proc.poll() is not None, timeout=60,
               message="round %d to complete" % rounds_done)
    assert consumer.proc.poll() is None, consumer.describe()


def signal_counts(events):
    return dict(query(events, "select signal, count(*) from events group by signal"))


@pytest.mark.timeout(90)
def test_ctrl_c_to_the_group_loses_nothing(cli):
    assert cli.run("produce", "mixed", "--count", "3").returncode == 0
    consumer = start_consumer(cli)
    children = wait_until(lambda: writer_processes(consumer.pid), timeout=30,
                          message="the consumer's writer process")
    wait_until(lambda: cli.task_statuses().get("complete") == 3 * MIXED
               or consumer.proc.poll() is not None, timeout=60,
               message="the tasks to complete")
    # The writer process gets the Ctrl-C too, and must outlive it: the
    # consumer's last batch and its stopped run go through it.
    consumer.send_group(signal.SIGINT)
    assert consumer.wait(30) == 0, consumer.describe()
    assert "writer process failed" not in consumer.stderr
    assert signal_counts(cli.events) == {
        "enqueued": 3 * MIXED, "executing": 3 * MIXED, "complete": 3 * MIXED}
    assert query(cli.events, "select stop_reason, events_dropped from runs "
                 "where role = 'consumer'") == [("graceful", 0)]
    # Its input closed, the writer process is gone too.
    wait_until(lambda: not any(alive(pid) for pid in children), timeout=10,
               message="the writer process to exit")


@pytest.mark.timeout(90)
def test_writer_process_leaves_when_the_consumer_is_killed(cli):
    consumer = start_consumer(cli)
    run_round(cli, consumer, 1)
    children = writer_processes(consumer.pid)
    assert children
    consumer.send(signal.SIGKILL)
    consumer.wait(10)
    wait_until(lambda: not any(alive(pid) for pid in children), timeout=10,
               message="the orphaned writer process to exit")
    # What it had committed is intact; the killed run is left unstopped.
    assert scalar(cli.events, "pragma integrity_check") == "ok"
    assert signal_counts(cli.events)["complete"] == MIXED
    assert query(cli.events, "select stopped from runs "
                 "where role = 'consumer'") == [(None,)]


@pytest.mark.timeout(120)
def test_a_dead_writer_process_is_replaced_and_nothing_is_lost(cli):
    consumer = start_consumer(cli)
    run_round(cli, consumer, 1)
    (child,) = writer_processes(consumer.pid)
    os.kill(child, signal.SIGKILL)
    run_round(cli, consumer, 2)  # recorded through a new writer process
    # The dead one was reaped, and another took its place: the consumer
    # never writes the store from its own process.
    (new,) = writer_processes(consumer.pid)
    assert new != child and not alive(child)
    assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()
    assert "writer process killed by SIGKILL" in consumer.stderr
    assert signal_counts(cli.events) == {
        "enqueued": 2 * MIXED, "executing": 2 * MIXED, "complete": 2 * MIXED}
    assert query(cli.events, "select stop_reason, events_dropped from runs "
                 "where role = 'consumer'") == [("graceful", 0)]
