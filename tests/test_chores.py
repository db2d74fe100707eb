"""A consumer's chores: functions on a timer that never raise into it."""
import logging
import threading

from conftest import wait_until
from hueyscope.consumer.chores import Chore


def test_a_chore_that_raises_is_logged_counted_and_carries_on(caplog):
    calls = []

    def flaky():
        calls.append(threading.current_thread().name)
        if len(calls) % 2:
            raise OSError("disk on fire")
        return "ok"

    chore = Chore("flaky", 0.01, flaky)
    with caplog.at_level(logging.WARNING, logger="hueyscope.consumer"):
        chore.start()
        wait_until(lambda: chore.runs >= 2 and chore.failures >= 2,
                   timeout=10, message="two runs and two failures")
        assert chore.stop(timeout=5)
    assert calls[0] == "hueyscope-flaky"
    lines = [r.getMessage() for r in caplog.records]
    assert "flaky failed, retrying in 0.01s: OSError: disk on fire" in lines
    assert len(lines) == chore.failures
    # Called by hand, it never raises either: None when the call failed.
    raises_next = len(calls) % 2 == 0
    assert chore.run() == (None if raises_next else "ok")


def test_first_at_zero_runs_at_once_and_stop_does_not_wait_an_interval():
    ran = threading.Event()
    chore = Chore("soon", 3600, ran.set, first_at=0)
    chore.start()
    assert ran.wait(10)
    assert chore.stop(timeout=5)
    assert chore.runs == 1


def test_the_first_call_waits_an_interval_by_default():
    calls = []
    chore = Chore("later", 3600, lambda: calls.append(1))
    chore.start()
    assert chore.stop(timeout=5)
    assert calls == [] and chore.runs == 0


def test_stop_before_start_is_fine():
    assert Chore("idle", 1, lambda: None).stop()
