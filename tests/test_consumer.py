"""The consumer as a real process and embedded in a thread."""
from conftest import query, scalar


def test_recorded_store_holds_what_the_scenarios_promise(recorded_store, recorded_expected):
    exp = recorded_expected
    statuses = dict(query(recorded_store, "select status, count(*) from tasks group by 1"))
    assert statuses == exp["status"]
    names = dict(query(recorded_store, "select task, count(*) from tasks group by 1"))
    assert names == exp["task_names"]
    signals = dict(query(recorded_store, "select signal, count(*) from events group by 1"))
    for name, count in exp["signals"].items():
        assert signals.get(name, 0) == count, name
    locked = signals.get("locked", 0)
    assert locked >= exp["min_locked"]
    assert signals["retrying"] == exp["retrying_without_locks"] + locked
    assert signals["executing"] == exp["executing_without_locks"] + locked
    runs = query(recorded_store, "select role, stop_reason, workers from runs order by started")
    assert [r[0] for r in runs].count("producer") == exp["producer_runs"]
    consumers = [r for r in runs if r[0] == "consumer"]
    assert consumers == [("consumer", "graceful", 4)]
    assert scalar(recorded_store, "select count(*) from queue_samples") >= 1
