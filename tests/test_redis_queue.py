"""The same tasks, producer and consumer on a Redis queue instead of SQLite.

The event store stays a local SQLite file; only --queue changes.
"""
import signal

import pytest
import redis

from conftest import query, require_server, wait_until

REDIS_URL = "redis://127.0.0.1:6379/13"


@pytest.fixture
def redis_queue():
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        require_server("Redis", REDIS_URL, exc)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()


@pytest.mark.timeout(90)
def test_producer_and_consumer_processes_share_a_redis_queue(cli, redis_queue):
    produced = cli.run("produce", "pipeline", HUEYSCOPE_QUEUE=redis_queue)
    assert produced.returncode == 0, produced.stderr
    status = cli.run("status", HUEYSCOPE_QUEUE=redis_queue)
    assert status.returncode == 0, status.stderr
    assert "queue: %s" % redis_queue in status.stdout
    assert "pending         1" in status.stdout

    consumer = cli.start("consume", "--no-periodic", "-w", "2",
                         HUEYSCOPE_QUEUE=redis_queue)
    waited = cli.run("produce", "mixed", "--wait", "--timeout", "30",
                     HUEYSCOPE_QUEUE=redis_queue)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    wait_until(lambda: cli.task_statuses().get("complete") == 10,
               message="the pipeline and the mixed tasks recorded as complete")
    assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()

    # The pipeline ran its three steps, each waiting on the one before.
    chain = query(cli.events, """select f.status, t.status, s.status
        from tasks f join tasks t on t.parent_id = f.task_id
        join tasks s on s.parent_id = t.task_id where f.task = 'fetch'""")
    assert chain == [("complete", "complete", "complete")]
    runs = query(cli.events, "select role, backend, stop_reason from runs "
                 "order by started")
    assert ("consumer", "redis", "graceful") in runs
    assert not (cli.folder / "queue.db").exists()  # the queue really was Redis
