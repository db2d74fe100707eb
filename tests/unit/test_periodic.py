"""Periodic tasks once per tick: two Hueys on one queue file, one claim each tick."""
import datetime

import pytest
from huey import crontab

from hueyscope.queue.periodic import tick_of
from hueyscope.queue.sqlite import SqliteHuey
from unit_helpers import count, rows


def beat():
    return "beat"


@pytest.fixture
def consumers(tmp_path):
    """Two Hueys sharing one queue, each with the same periodic task (as two
    consumers of one app)."""
    hueys = []
    for _ in range(2):
        huey = SqliteHuey("unit", filename=str(tmp_path / "queue.db"))
        huey.periodic_task(crontab())(beat)
        hueys.append(huey)
    yield hueys
    for huey in hueys:
        huey.storage.close()


def _schedule(huey, timestamp):
    """What huey's scheduler does at ``timestamp``: enqueue each due task."""
    return [huey.enqueue(task) for task in huey.read_periodic(timestamp)]


def at(*args, fold=0):
    return datetime.datetime(*args, fold=fold)


@pytest.mark.parametrize("timestamp,tick", [
    (at(2024, 6, 2, 9, 5), "2024-06-02T09:05"),
    (at(2024, 6, 2, 9, 5, 59), "2024-06-02T09:05"),
    (at(2024, 12, 31, 23, 59, 30), "2024-12-31T23:59"),
])
def test_a_tick_is_the_minute(timestamp, tick):
    assert tick_of(timestamp) == tick


def test_each_tick_is_enqueued_by_one_consumer_only(consumers):
    first, second = consumers
    minute = at(2024, 6, 2, 9, 5)
    assert len(_schedule(first, minute)) == 1
    assert _schedule(second, minute) == [None]  # claimed by the first
    assert _schedule(first, minute + datetime.timedelta(seconds=30)) == [None]
    assert count(first, "task") == 1
    # The next minute is a tick of its own, whoever reaches it first.
    assert _schedule(second, minute + datetime.timedelta(minutes=1))[0] is not None
    assert count(first, "task") == 2
    claims = rows(first.storage.filename,
                  "select tick from hueyscope_periodic_tick order by tick")
    assert claims == [("2024-06-02T09:05",), ("2024-06-02T09:06",)]


def test_the_repeated_hour_of_a_fall_back_is_a_tick_of_its_own(consumers):
    first, second = consumers
    once, again = at(2024, 11, 3, 1, 30, fold=0), at(2024, 11, 3, 1, 30, fold=1)
    assert _schedule(first, once)[0] is not None
    assert _schedule(second, again)[0] is not None  # huey serves it twice too
    assert _schedule(first, again) == [None]
    claims = rows(first.storage.filename,
                  "select tick from hueyscope_periodic_tick order by tick")
    assert claims == [("2024-11-03T01:30",), ("2024-11-03T01:30+fold",)]


def test_a_task_enqueued_by_hand_claims_no_tick(consumers):
    first, _ = consumers
    task = first.read_periodic(at(2024, 6, 2, 9, 5))[0]
    del task.hueyscope_tick  # as when the task is called by hand
    first.enqueue(task)
    first.enqueue(task)
    assert count(first, "task") == 2
    assert count(first, "hueyscope_periodic_tick") == 0
