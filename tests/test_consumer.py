"""The consumer: a real process stopped by real signals, and embedded in a thread."""
import logging
import signal
import subprocess
import sys
import threading
import time

import pytest
from huey.consumer import Consumer as StockConsumer

import hueyscope
from conftest import query, scalar, wait_until
from hueyscope.consumer.runner import Consumer
from hueyscope.queue import make_huey
from hueyscope.settings import Settings


def enqueue(cli, call):
    """Enqueue ``call`` (Python, on the demo catalogue) from a producer process;
    returns the task id."""
    code = ("import hueyscope.demo_tasks as t; r = t.%s; t.recorder.flush(); "
            "print(r.id)" % call)
    result = subprocess.run([sys.executable, "-c", code], cwd=cli.folder,
                            env=cli.env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def signals_of(cli, task_id):
    return [row[0] for row in query(
        cli.events, "select signal from events where task_id = ? order by ts, id",
        (task_id,))]


def wait_signal(cli, task_id, name, timeout=20):
    wait_until(lambda: name in signals_of(cli, task_id), timeout=timeout,
               message="%s of task %s" % (name, task_id))


def consumer_run(cli):
    rows = query(cli.events, "select stop_reason, workers, worker_type, stopped "
                 "from runs where role = 'consumer'")
    assert len(rows) == 1, rows
    return rows[0]


def test_recorded_store_holds_what_the_scenarios_promise(recorded_store,
                                                          recorded_expected):
    exp = recorded_expected
    statuses = dict(query(recorded_store,
                          "select status, count(*) from tasks group by 1"))
    assert statuses == exp["status"]
    names = dict(query(recorded_store, "select task, count(*) from tasks group by 1"))
    assert names == exp["task_names"]
    signals = dict(query(recorded_store,
                         "select signal, count(*) from events group by 1"))
    for name, count in exp["signals"].items():
        assert signals.get(name, 0) == count, name
    locked = signals.get("locked", 0)
    assert locked >= exp["min_locked"]
    assert signals["retrying"] == exp["retrying_without_locks"] + locked
    assert signals["executing"] == exp["executing_without_locks"] + locked
    runs = query(recorded_store, "select role, stop_reason, workers from runs")
    assert [r[0] for r in runs].count("producer") == exp["producer_runs"]
    assert [r for r in runs if r[0] == "consumer"] == [("consumer", "graceful", 4)]
    assert scalar(recorded_store, "select count(*) from queue_samples") >= 1


@pytest.mark.parametrize("worker_type,signum,group", [
    ("thread", signal.SIGTERM, False),
    ("thread", signal.SIGINT, False),
    ("process", signal.SIGTERM, False),
    # A terminal's Ctrl-C reaches every process of the group, workers too.
    ("process", signal.SIGINT, True),
])
def test_stop_signal_lets_the_running_task_finish(cli, worker_type, signum, group):
    consumer = cli.start("consume", "--workers", "2", "--worker-type", worker_type,
                         "--no-periodic", "--max-delay", "0.2", name="consumer")
    task_id = enqueue(cli, "slow_io(1.5)")
    wait_signal(cli, task_id, "executing")
    if group:
        consumer.send_group(signum)
    else:
        consumer.send(signum)
    assert consumer.wait(30) == 0, consumer.describe()
    assert signals_of(cli, task_id)[-1] == "complete"
    stop_reason, workers, kind, stopped = consumer_run(cli)
    assert (stop_reason, workers, kind) == ("graceful", 2, worker_type)
    finished = scalar(cli.events, "select finished from tasks where task_id = ?",
                      (task_id,))
    assert finished <= stopped
    assert "Received %s" % signal.Signals(signum).name in consumer.stderr


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_second_signal_interrupts_the_running_task(cli, worker_type):
    consumer = cli.start("consume", "--workers", "1", "--worker-type", worker_type,
                         "--no-periodic", "--max-delay", "0.2", name="consumer")
    task_id = enqueue(cli, "slow_io(20)")
    wait_signal(cli, task_id, "executing")
    consumer.send(signal.SIGTERM)
    wait_until(lambda: "Shutting down gracefully" in consumer.stderr,
               message="the graceful shutdown to begin")
    consumer.send(signal.SIGTERM)
    assert consumer.wait(15) == 1, consumer.describe()
    # Interrupted, then put back on the (leased) queue for the next consumer.
    assert signals_of(cli, task_id)[-2:] == ["interrupted", "recovered"]
    assert scalar(cli.queue, "select count(*) from task") == 1
    assert consumer_run(cli)[0] == "interrupted"


def test_producer_and_consumer_processes_share_one_queue(cli):
    consumer = cli.start("consume", "--workers", "2", "--no-periodic",
                         "--heartbeat-every", "0.3", name="consumer")
    produced = cli.run("produce", "pipeline", "--wait", "--timeout", "30")
    assert produced.returncode == 0, produced.stderr
    assert "7 -> 21 -> {'stored': 21}" in produced.stdout
    wait_until(lambda: scalar(cli.events, "select count(*) from queue_samples"),
               message="a queue sample")
    assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()
    pids = dict(query(cli.events, "select role, pid from runs"))
    assert set(pids) == {"producer", "consumer"}
    assert pids["consumer"] == consumer.pid
    assert pids["producer"] != consumer.pid
    heartbeat, started = query(cli.events, "select heartbeat, started from runs "
                               "where role = 'consumer'")[0]
    assert heartbeat > started


def test_flush_locks_releases_a_stale_lock(cli):
    # A lock left behind by a consumer that was killed while holding it.
    enqueue(cli, "huey.put('hueyscope.lock.demo:daily-sync', '1') or t.quick_add(1, 1)")
    status = cli.run("status", "--json")
    assert '"demo:daily-sync"' in status.stdout
    consumer = cli.start("consume", "--flush-locks", "--no-periodic", name="consumer")
    wait_until(lambda: "Found stale locks: demo:daily-sync" in consumer.stderr,
               message="the stale lock to be flushed")
    assert consumer.stop() == 0
    assert '"locks": []' in cli.run("status", "--json").stdout


# -- embedded in a thread ----------------------------------------------------

@pytest.fixture
def embedded_huey(tmp_path):
    settings = Settings.build(queue=str(tmp_path / "queue.db"),
                              events=str(tmp_path / "events.db"))
    huey = make_huey(settings, name="embedded")
    hueyscope.attach(huey, events=settings.events)

    @huey.task()
    def nap(seconds):
        time.sleep(seconds)
        return seconds

    @huey.task()
    def kill_worker():
        # Not an Exception: huey does not catch it, the worker thread dies.
        raise SystemExit("worker down")

    huey.nap, huey.kill_worker = nap, kill_worker
    return huey


def start_embedded(huey, **options):
    consumer = Consumer(huey, **dict(dict(workers=1, periodic=False,
                                          initial_delay=0.05, max_delay=0.1,
                                          health_check_interval=0.2,
                                          sample_interval=0.2), **options))
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    assert consumer.started.wait(10)
    return consumer, thread


def test_stock_consumer_fails_in_a_thread(embedded_huey):
    """The bug we fix: huey's Consumer.run() in a thread dies in start()."""
    errors = []
    stock = StockConsumer(embedded_huey, workers=1, periodic=False)

    def run():
        try:
            stock.run()
        except ValueError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    try:
        assert errors and "main thread" in errors[0]
    finally:
        stock.stop_flag.set()
        for _, worker in stock.worker_threads:
            worker.join(5)


def test_embedded_consumer_restarts_a_dead_worker(embedded_huey, caplog):
    huey = embedded_huey
    consumer, thread = start_embedded(huey)
    first = consumer.worker_threads[0][1]
    with caplog.at_level(logging.WARNING, logger="huey.consumer"):
        huey.kill_worker()
        first.join(10)
        assert not first.is_alive()
        wait_until(lambda: consumer.worker_threads[0][1].is_alive()
                   and consumer.worker_threads[0][1] is not first,
                   timeout=10, message="the health check to restart the worker")
    assert "Worker 1 died, restarting." in caplog.text
    # The new worker runs tasks.
    assert huey.nap(0.01).get(blocking=True, timeout=10) == 0.01
    consumer.request_stop()
    assert consumer.wait_stopped(10)
    thread.join(5)
    assert consumer.stop_reason == "graceful"
    assert consumer.health_checks >= 1


def test_embedded_consumer_stops_gracefully_or_at_once(embedded_huey):
    huey = embedded_huey
    events = hueyscope.attach(huey).path
    consumer, thread = start_embedded(huey, workers=2)
    finishing = huey.nap(0.8)
    wait_until(lambda: consumer.in_flight.value == 1, message="a task in flight")
    consumer.request_stop(graceful=True)
    assert consumer.wait_stopped(10)
    assert consumer.stop_reason == "graceful"
    assert finishing.get() == 0.8
    assert scalar(events, "select stop_reason from runs where id = ?",
                  (consumer.run_id,)) == "graceful"

    consumer, thread = start_embedded(huey)
    cut = huey.nap(5)
    wait_until(lambda: consumer.in_flight.value == 1, message="a task in flight")
    consumer.request_stop(graceful=True)
    consumer.request_stop(graceful=False)
    assert consumer.wait_stopped(10)
    assert consumer.stop_reason == "interrupted"
    assert [e for e, in query(events, "select signal from events where "
                              "task_id = ? order by id", (cut.id,))][-2:] == [
        "interrupted", "recovered"]
    assert scalar(events, "select status from tasks where task_id = ?",
                  (cut.id,)) == "enqueued"


def test_report_every_rebuilds_the_site_and_never_stops_the_consumer(cli):
    consumer = cli.start("consume", "--no-periodic", "--report-every", "1",
                         name="consumer")
    assert cli.run("produce", "pipeline", "--wait").returncode == 0
    index = cli.site / "index.html"
    wait_until(index.exists, timeout=30, message="the report")
    first = index.stat().st_mtime_ns
    wait_until(lambda: index.exists() and index.stat().st_mtime_ns != first,
               timeout=30, message="a rebuilt report")
    assert consumer.stop() == 0, consumer.describe()

    # A folder that is not a report: every build fails, the consumer runs on.
    precious = cli.folder / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep")
    consumer = cli.start("consume", "--no-periodic", "--report-every", "1",
                         "--site", str(precious), name="consumer2")
    wait_until(lambda: "Report not rebuilt" in consumer.stderr, timeout=30,
               message="a failed build to be logged")
    assert cli.run("produce", "pipeline", "--wait").returncode == 0
    assert consumer.stop() == 0, consumer.describe()
    assert sorted(p.name for p in precious.iterdir()) == ["notes.txt"]
