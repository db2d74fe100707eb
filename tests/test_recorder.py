"""The recorder: what huey emits is what the event store holds.

Real parts only: fresh SQLite queues and event stores in a temporary
folder, ``hueyscope consume`` / ``hueyscope produce`` / huey's own
``huey_consumer`` as subprocesses stopped with real signals, and an
in-process consumer for the test that makes the store unwritable with
``chattr +i``. huey's emissions are counted independently by a second signal
handler (:mod:`recorder_helpers`).
"""
import collections
import datetime
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import recorder_helpers as rh
from conftest import cli_env, query, scalar, start_cli, wait_until
from hueyscope.consumer.runner import Consumer

TESTS = Path(__file__).parent
TERMINAL = ("complete", "error", "locked", "canceled", "interrupted", "timeout",
            "rate-limited")


def _past(seconds):
    return (datetime.datetime.now(datetime.timezone.utc)
            - datetime.timedelta(seconds=seconds))


def enqueue_workload(huey, tasks):
    """Enqueue the deterministic workload; {task id: (final signal, count)}."""
    expect = {}
    for i in range(5):
        expect[tasks.ok(i).id] = ("complete", 1)
    # Fails on every attempt: 1 + FAIL_RETRIES errors.
    expect[tasks.always_fail(1).id] = ("error", 1 + rh.FAIL_RETRIES)
    expect[tasks.guarded(7).id] = ("complete", 1)
    revoked = tasks.ok(99)
    revoked.revoke()
    expect[revoked.id] = ("revoked", 1)
    expect[tasks.ok.schedule((100,), delay=0, expires=_past(60)).id] = ("expired", 1)
    expect[tasks.ok.schedule((5,), delay=1).id] = ("complete", 1)
    expect[tasks.cancel_me(3).id] = ("canceled", 1)
    for result in huey.enqueue(
            tasks.step_one.s(1).then(tasks.step_two, 10).then(tasks.step_three)):
        expect[result.id] = ("complete", 1)
    return expect


def all_done(counts, expect):
    return all(counts[(signal, task_id)] >= n
               for task_id, (signal, n) in expect.items())


@pytest.mark.timeout(90)
@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_every_signal_huey_emits_is_recorded_exactly(tmp_path, worker_type):
    queue, events, counts = tmp_path / "queue.db", tmp_path / "events.db", tmp_path / "counts"
    huey, recorder, tasks = rh.build(queue, events, counts=counts)
    # Hold the lock so guarded() collides with it at least once.
    lock = huey.lock_task(rh.LOCK)
    lock.__enter__()
    try:
        expect = enqueue_workload(huey, tasks)
        env = cli_env(tmp_path, PYTHONPATH=TESTS, **{rh.COUNTS_ENV: counts})
        consumer = start_cli(
            ["consume", "--app", "recorder_helpers:huey", "--workers", "2",
             "--worker-type", worker_type, "--no-periodic", "--max-delay", "0.2",
             "--heartbeat-every", "0.5"], tmp_path, env=env, name="consumer")
        try:
            wait_until(lambda: any(s == "locked" for s, _ in rh.emitted(counts))
                       or consumer.proc.poll() is not None,
                       timeout=30, message="a locked collision")
            assert consumer.proc.poll() is None, consumer.describe()
        finally:
            lock.__exit__(None, None, None)
            lock = None
        wait_until(lambda: all_done(rh.emitted(counts), expect)
                   or consumer.proc.poll() is not None,
                   timeout=40, message="every task to finish")
        assert consumer.proc.poll() is None, consumer.describe()
        assert consumer.stop(signal.SIGTERM, timeout=30) == 0, consumer.describe()
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)
        if "consumer" in locals():
            consumer.kill()
    assert recorder.end_run(timeout=10)

    huey_emitted = rh.emitted(counts, with_pid=True)
    in_store = rh.recorded(events, with_pid=True)
    # Every kind of outcome happened...
    kinds = collections.Counter(s for s, _, _ in huey_emitted.elements())
    for name in ("enqueued", "scheduled", "executing", "complete", "error",
                 "retrying", "locked", "revoked", "expired", "canceled"):
        assert kinds[name] >= 1, (name, kinds)
    # ...and the store holds exactly what huey emitted, per signal, task and
    # the process that emitted it.
    assert in_store == huey_emitted
    assert sum(in_store.values()) > 40

    runs = dict(query(events, "select role, count(*) from runs group by role"))
    assert runs == {"producer": 1, "consumer": 1}
    pids = {p for _, _, p in huey_emitted if p != os.getpid()}
    if worker_type == "process":
        # Workers (and the scheduler) recorded from their own processes,
        # under the consumer's run.
        assert len(pids) >= 2
    else:
        assert len(pids) == 1
    consumer_run = query(events, "select id, stop_reason, events_dropped, "
                         "events_written from runs where role = 'consumer'")[0]
    assert consumer_run[1:3] == ("graceful", 0)
    assert scalar(events, "select count(*) from events where pid != ? and "
                  "run_id != ?", (os.getpid(), consumer_run[0])) == 0
