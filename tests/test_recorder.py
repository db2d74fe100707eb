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


def test_producer_records_enqueued_events_under_a_producer_run(cli):
    result = cli.run("produce", "mixed")
    assert result.returncode == 0, result.stderr
    rows = query(cli.events, "select e.signal, e.task, e.args, r.role, r.pid, "
                 "r.stopped, e.pid from events e join runs r on r.id = e.run_id")
    assert len(rows) == 7
    assert {r[0] for r in rows} == {"enqueued"}
    assert {r[3] for r in rows} == {"producer"}
    assert collections.Counter(r[1] for r in rows) == {
        "quick_add": 3, "slow_io": 2, "cpu_pi_estimate": 1, "flaky_network_call": 1}
    # Recorded by the producer process itself, which ended its run.
    assert len({(r[4], r[6]) for r in rows}) == 1 and rows[0][4] == rows[0][6]
    assert rows[0][5] is not None
    assert all(r[2] is not None for r in rows)
    assert scalar(cli.events, "select count(*) from tasks where status = "
                  "'enqueued'") == 7


LOAD = 3000


@pytest.mark.timeout(90)
def test_sigterm_during_a_burst_loses_no_event(cli):
    result = cli.run("produce", "load", "--count", LOAD, timeout=60)
    assert result.returncode == 0, result.stderr
    consumer = cli.start("consume", "--workers", "4", "--no-periodic",
                         "--heartbeat-every", "0.5", name="consumer")
    wait_until(lambda: (scalar(cli.events, "select count(*) from events where "
                               "signal = 'complete'") or 0) >= 200
               or consumer.proc.poll() is not None,
               timeout=30, message="the first tasks to complete")
    assert consumer.stop(signal.SIGTERM, timeout=30) == 0, consumer.describe()

    signals = dict(query(cli.events,
                         "select signal, count(*) from events group by 1"))
    statuses = dict(query(cli.events,
                          "select status, count(*) from tasks group by 1"))
    assert signals["enqueued"] == LOAD
    done = signals["complete"]
    assert done >= 200
    # A burst, stopped in the middle (else this test proves little).
    assert done < LOAD, "the consumer drained everything before SIGTERM"
    assert signals == {"enqueued": LOAD, "executing": done, "complete": done}
    assert statuses == {"complete": done, "enqueued": LOAD - done}
    # Every execution that began has its terminal event.
    assert scalar(cli.events, """select count(*) from events e
        where signal = 'executing' and not exists (
          select 1 from events t where t.task_id = e.task_id
          and t.signal in (%s))""" % ",".join("'%s'" % s for s in TERMINAL)) == 0
    # Every result in the queue has its complete event, and nothing more.
    results = {r[0] for r in query(cli.queue, "select key from kv")}
    completed = {r[0] for r in query(
        cli.events, "select task_id from events where signal = 'complete'")}
    complete_tasks = {r[0] for r in query(
        cli.events, "select task_id from tasks where status = 'complete'")}
    assert results == completed == complete_tasks
    run = query(cli.events, "select id, stop_reason, events_dropped, "
                "events_written, stopped from runs where role = 'consumer'")
    assert len(run) == 1
    run_id, reason, dropped, written, stopped = run[0]
    assert (reason, dropped) == ("graceful", 0) and stopped is not None
    assert written == scalar(cli.events, "select count(*) from events where "
                             "run_id = ?", (run_id,)) == 2 * done


@pytest.mark.timeout(90)
def test_sigkill_loses_at_most_the_last_flush_interval(cli):
    """SIGKILL cannot be caught: what the writer committed before it stays,
    and that is everything but the last flush interval (0.2 s)."""
    import time

    result = cli.run("produce", "load", "--count", LOAD, timeout=60)
    assert result.returncode == 0, result.stderr
    consumer = cli.start("consume", "--workers", "4", "--no-periodic",
                         name="consumer")
    wait_until(lambda: (scalar(cli.events, "select count(*) from events where "
                               "signal = 'complete'") or 0) >= 600
               or consumer.proc.poll() is not None,
               timeout=30, message="the first tasks to complete")
    assert consumer.proc.poll() is None, consumer.describe()
    killed_at = time.time()
    consumer.kill()

    results = {r[0] for r in query(cli.queue, "select key from kv")}
    completed = {r[0] for r in query(
        cli.events, "select task_id from events where signal = 'complete'")}
    assert len(results) < LOAD, "the consumer drained everything before SIGKILL"
    # Nothing recorded that did not happen, and the store is intact.
    assert completed <= results
    assert query(cli.events, "pragma integrity_check") == [("ok",)]
    # The last commit came at most one flush interval (plus the time one
    # batch takes to write) before the kill...
    first, last = query(cli.events, "select min(ts), max(ts) from events "
                        "where signal = 'complete'")[0]
    assert killed_at - last < 1.0, killed_at - last
    # ...so the tasks lost are those of that last moment, not the run's.
    rate = len(completed) / max(last - first, 0.1)
    lost = results - completed
    assert len(lost) <= rate * 1.0 + 8, (len(lost), rate)
    # The run never stopped: the report and the in-flight query call it lost.
    assert query(cli.events, "select stopped from runs "
                 "where role = 'consumer'") == [(None,)]


SECRETS = ("hunter2-pw", "tok-123", "s3cr3t", "key-abc", "Bearer xyz",
           "nested-pw", "deep-token")


def _kwargs_with_secrets():
    return {
        "Password": "hunter2-pw", "TOKEN": "tok-123", "user": "bob",
        "config": {"Secret": "s3cr3t", "API_KEY": "key-abc",
                   "headers": [{"Authorization": "Bearer xyz", "accept": "json"}],
                   "db": {"password": "nested-pw", "host": "db1"}},
        "items": [1, {"token": "deep-token"}],
    }


def test_args_redacted_truncated_and_repr(tmp_path):
    events = tmp_path / "events.db"
    huey, recorder, tasks = rh.build(tmp_path / "queue.db", events,
                                     max_arg_chars=400)
    with_secrets = tasks.ok.s(1)
    with_secrets.kwargs = _kwargs_with_secrets()
    huey.enqueue(with_secrets)
    long_one = tasks.ok("x" * 5000)
    odd = tasks.ok.s(1)
    odd.args = ({3, 1}, datetime.date(2024, 1, 2))
    odd.kwargs = {"when": datetime.datetime(2024, 1, 2, 3, 4, 5)}
    huey.enqueue(odd)
    assert recorder.end_run(timeout=10)

    def row(task_id):
        return query(events, "select args, kwargs from events where task_id = ?",
                     (task_id,))[0]

    args, kwargs = row(with_secrets.id)
    assert json.loads(args) == [1]
    assert json.loads(kwargs) == {
        "Password": "***", "TOKEN": "***", "user": "bob",
        "config": {"Secret": "***", "API_KEY": "***",
                   "headers": [{"Authorization": "***", "accept": "json"}],
                   "db": {"password": "***", "host": "db1"}},
        "items": [1, {"token": "***"}],
    }
    # Cut to about max_arg_chars, and still JSON: a string that says so.
    args, _ = row(long_one.id)
    assert json.loads(args) == '["' + "x" * 397 + "...[truncated 4605 chars]"
    # Escaping lengthens the kept part; it is cut until it fits again.
    quotes = tasks.ok('"' * 5000)
    assert recorder.flush(timeout=10)
    args, _ = row(quotes.id)
    prefix, note = json.loads(args).split("...[truncated ")
    assert prefix.startswith('["\\"\\"') and 390 <= len(args) - len(note) - 16 <= 400
    assert note == "%d chars]" % (len(json.dumps(['"' * 5000])) - len(prefix))
    args, kwargs = row(odd.id)
    assert json.loads(args) == [repr({1, 3}), repr(datetime.date(2024, 1, 2))]
    assert json.loads(kwargs) == {
        "when": repr(datetime.datetime(2024, 1, 2, 3, 4, 5))}
    # No secret reached the file (nor its WAL) in any form.
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("events.db*"))
    for secret in SECRETS:
        assert secret.encode() not in raw, secret


def test_capture_args_off_stores_none(tmp_path):
    events = tmp_path / "events.db"
    huey, recorder, tasks = rh.build(tmp_path / "queue.db", events,
                                     capture_args=False)
    call = tasks.ok.s("visible?")
    call.kwargs = _kwargs_with_secrets()
    huey.enqueue(call)
    tasks.always_fail(5)
    assert recorder.end_run(timeout=10)
    rows = query(events, "select args, kwargs from events")
    assert len(rows) == 2
    assert rows == [(None, None), (None, None)]


@pytest.mark.timeout(60)
def test_no_args_flag_turns_capture_off(cli):
    result = cli.run("produce", "mixed", "--no-args")
    assert result.returncode == 0, result.stderr
    consumer = cli.start("consume", "--no-args", "--workers", "2",
                         "--no-periodic", "--max-delay", "0.2", name="consumer")
    wait_until(lambda: cli.task_statuses().get("complete") == 7
               or consumer.proc.poll() is not None, timeout=30,
               message="the mixed scenario to complete")
    assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()
    rows = query(cli.events, "select signal, args, kwargs from events")
    assert {r[0] for r in rows} >= {"enqueued", "executing", "complete"}
    assert {(r[1], r[2]) for r in rows} == {(None, None)}


STOCK_APP = '''
import hueyscope
from hueyscope.queue import make_huey
from hueyscope.settings import Settings

huey = make_huey(Settings(queue=%(queue)r, events=%(events)r))
hueyscope.attach(huey, events=%(events)r)


@huey.task()
def double(x):
    return 2 * x
'''


def stock_app(tmp_path, attach_options=""):
    """Write stockapp.py (STOCK_APP) into tmp_path; (queue, events, env)."""
    queue, events = tmp_path / "queue.db", tmp_path / "events.db"
    app = STOCK_APP % {"queue": str(queue), "events": str(events)}
    if attach_options:
        app = app.replace("hueyscope.attach(huey, events=%r)" % str(events),
                          "hueyscope.attach(huey, events=%r, %s)" % (
                              str(events), attach_options))
    (tmp_path / "stockapp.py").write_text(app)
    return queue, events, cli_env(tmp_path, PYTHONPATH=tmp_path)


def start_huey_consumer(tmp_path, env, worker_type):
    """huey's own consumer on stockapp.huey, 2 workers; (process, log file)."""
    out = open(tmp_path / "huey_consumer.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "huey.bin.huey_consumer", "stockapp.huey",
         "-w", "2", "-k", worker_type, "-d", "0.05", "-m", "0.2"],
        cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
        start_new_session=True)
    return proc, out


@pytest.mark.timeout(60)
def test_attached_app_records_under_the_stock_huey_consumer(tmp_path):
    queue, events, env = stock_app(tmp_path)
    proc, out = start_huey_consumer(tmp_path, env, "thread")
    try:
        produced = subprocess.run(
            [sys.executable, "-c", "import stockapp; "
             "[stockapp.double(i) for i in range(6)]"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
        assert produced.returncode == 0, produced.stderr

        def log():
            return (tmp_path / "huey_consumer.log").read_text()

        wait_until(lambda: scalar(events, "select count(*) from events where "
                                  "signal = 'complete' and pid = ?",
                                  (proc.pid,)) == 6 or proc.poll() is not None,
                   timeout=30, message="six tasks recorded by huey_consumer")
        assert proc.poll() is None, log()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, log()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        out.close()
    runs = {r[0]: r[1:] for r in query(
        events, "select role, pid, stopped, events_written, events_dropped "
        "from runs")}
    assert set(runs) == {"consumer", "producer"}
    pid, stopped, written, dropped = runs["consumer"]
    assert pid == proc.pid and stopped is not None and dropped == 0
    assert written == 12
    signals = dict(query(events, "select signal, count(*) from events "
                         "where pid = ? group by 1", (proc.pid,)))
    assert signals == {"executing": 6, "complete": 6}
    assert scalar(events, "select count(*) from tasks where status = "
                  "'complete' and run_id = (select id from runs where "
                  "role = 'consumer')") == 6


@pytest.mark.timeout(60)
def test_stock_huey_consumer_with_process_workers_loses_nothing_at_a_graceful_stop(tmp_path):
    """huey_consumer's process workers and its scheduler process leave through
    os._exit: the recorder flushes in multiprocessing's exit hook, so even
    with a flush interval longer than the run, every event is written."""
    queue, events, env = stock_app(tmp_path, "flush_interval=600")
    proc, out = start_huey_consumer(tmp_path, env, "process")
    # Enqueued once the consumer is up, so the tasks are not due yet when
    # taken: they go through the schedule whatever the machine's load.
    wait_until(lambda: "commands are available" in
               (tmp_path / "huey_consumer.log").read_text(),
               message="huey_consumer to start")
    produced = subprocess.run(
        [sys.executable, "-c", "import stockapp; "
         "[stockapp.double.schedule((i,), delay=1.0) for i in range(3)]"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert produced.returncode == 0, produced.stderr
    try:
        wait_until(lambda: scalar(queue, "select count(*) from kv") == 3
                   or proc.poll() is not None,
                   timeout=30, message="three results in the queue")
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        out.close()
    signals = dict(query(events, "select signal, count(*) from events group by 1"))
    # enqueued: by the producer, then again by the scheduler process when
    # due; scheduled, executing and complete: by the worker processes.
    assert signals == {"enqueued": 6, "scheduled": 3, "executing": 3,
                       "complete": 3}, (tmp_path / "huey_consumer.log").read_text()
    # The workers and the scheduler record under the consumer's run, which
    # its process stopped as huey's consumer did: gracefully. The producer's
    # run stopped at its exit.
    runs = query(events, "select role, pid = ?, stop_reason, workers, "
                 "worker_type from runs order by role", (proc.pid,))
    assert runs == [("consumer", 1, "graceful", 2, "process"),
                    ("producer", 0, "exit", None, None)], runs
    producer = scalar(events, "select pid from runs where role = 'producer'")
    workers = {pid for pid, in query(
        events, "select distinct pid from events where signal = 'executing'")}
    by_scheduler = {pid for pid, in query(
        events, "select distinct pid from events where signal = 'enqueued' "
        "and pid != ?", (producer,))}
    assert len(by_scheduler) == 1 and not by_scheduler & (workers | {proc.pid})


def chattr(flag, *paths):
    result = subprocess.run(["chattr", flag, *map(str, paths)],
                            capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr


@pytest.mark.timeout(60)
def test_unwritable_store_tasks_complete_and_drops_are_counted(tmp_path, caplog):
    """The event store made immutable mid-run (``chattr +i``, which stops
    root too): the consumer keeps running tasks, the recorder gives up after
    ``give_up_after`` and counts what it could not write.

    events.db and events.db-wal are made immutable, not events.db-shm:
    this test process reads the store too, and a process that has the -shm
    file mapped when it becomes immutable gets SIGBUS (the recorder's own
    processes survive it: tests/test_store_faults.py).
    """
    queue, events, counts = tmp_path / "queue.db", tmp_path / "events.db", tmp_path / "counts"
    huey, recorder, tasks = rh.build(queue, events, counts=counts,
                                     give_up_after=1.0, flush_interval=0.05)
    consumer = Consumer(huey, workers=2, periodic=False, max_delay=0.1,
                        sample_interval=0.5)
    thread = threading.Thread(target=consumer.run, daemon=True)
    caplog.set_level(logging.WARNING, logger="hueyscope.recorder")
    frozen = [events, Path("%s-wal" % events)]
    thread.start()
    try:
        first = [tasks.ok(i) for i in range(3)]
        assert [r.get(blocking=True, timeout=10) for r in first] == [0, 1, 2]
        wait_until(lambda: scalar(events, "select count(*) from events where "
                                  "signal = 'complete'") == 3,
                   timeout=10, message="the first tasks recorded")
        assert recorder.flush(timeout=10)
        before = sum(rh.emitted(counts).values())
        assert before == rh.recorded(events).total()

        chattr("+i", *frozen)
        try:
            blind = [tasks.ok(10 + i) for i in range(10)]
            # Tasks still run: their results are in the queue.
            assert [r.get(blocking=True, timeout=10) for r in blind] == \
                list(range(10, 20))
            wait_until(lambda: recorder.stats()["dropped"] > 0
                       and recorder.stats()["pending"] == 0,
                       timeout=15, message="the recorder to give up")
            assert scalar(events, "select count(*) from events") == before
        finally:
            chattr("-i", *frozen)
        after = [tasks.ok(30 + i) for i in range(2)]
        assert [r.get(blocking=True, timeout=10) for r in after] == [30, 31]
        consumer.request_stop()
        assert consumer.wait_stopped(20)
    finally:
        subprocess.run(["chattr", "-i", *map(str, frozen)], capture_output=True)
        consumer.request_stop(graceful=False)
        thread.join(20)
    assert consumer.stop_reason == "graceful"
    assert recorder.flush(timeout=10)

    huey_emitted = rh.emitted(counts)
    in_store = rh.recorded(events)
    missing = huey_emitted - in_store
    # Nothing recorded that huey did not emit; the rest went missing.
    assert in_store - huey_emitted == collections.Counter()
    # The blind window's tasks are the missing ones, at least in part...
    assert missing.total() > 0
    blind_ids = {r.id for r in blind}
    assert {task_id for _, task_id in missing} <= blind_ids
    # ...and after the store came back, recording went on.
    assert all(in_store[("complete", r.id)] == 1 for r in after)
    # Every missing event is counted in the run row, and was logged.
    dropped = scalar(events, "select sum(events_dropped) from runs")
    assert dropped == missing.total() == recorder.stats()["dropped"]
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR
              and "not recorded" in r.getMessage()]
    assert logged


def attempts_of(events, task_id, signal="executing"):
    return [r[0] for r in query(events, "select attempt from events where "
                                "task_id = ? and signal = ? order by id",
                                (task_id, signal))]


def test_attempt_counts_executions_of_a_retried_task(tmp_path):
    events = tmp_path / "events.db"
    huey, recorder, tasks = rh.build(tmp_path / "queue.db", events)
    failing = tasks.always_fail(1)
    rh.run_queue(huey)
    assert recorder.flush(timeout=10)
    assert attempts_of(events, failing.id) == [1, 2, 3]
    assert attempts_of(events, failing.id, "error") == [1, 2, 3]


@pytest.mark.parametrize("how", ["retries per call", "RetryTask"])
def test_attempt_counts_executions_whatever_set_the_retries(tmp_path, how):
    """attempt is 1 for the first execution, 2 for the first retry..., even
    when the retries were set per call or added by RetryTask."""
    events = tmp_path / "events.db"
    huey, recorder, tasks = rh.build(tmp_path / "queue.db", events)
    if how == "retries per call":
        # always_fail is declared with 2 retries; this call asks for 4.
        result = tasks.always_fail.schedule((1,), retries=4, delay=0)
        expected = [1, 2, 3, 4, 5]
    else:
        result = tasks.retry_until(str(tmp_path / "runs.txt"), 3)
        expected = [1, 2, 3]
    rh.run_queue(huey)
    assert recorder.flush(timeout=10)
    assert len(attempts_of(events, result.id)) == len(expected)
    assert attempts_of(events, result.id) == expected
