"""``hueyscope demo``: one real run, every behaviour asserted on its event store."""
import json
import re
import time

import pytest

from conftest import query, run_cli, cli_env
from hueyscope.demo import MARKER, prepare_folder


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("demo")
    started = time.monotonic()
    result = run_cli(["demo"], cwd, env=cli_env(cwd / "unused"), timeout=90)
    result.elapsed = time.monotonic() - started
    result.folder = cwd / "demo-run"
    result.events = result.folder / "events.db"
    return result


def executing(events, task, **where):
    rows = query(events, "select task_id, ts, priority, args, kwargs, attempt "
                 "from events where task = ? and signal = 'executing' order by ts",
                 (task,))
    return [r for r in rows if all(json.loads(r[4] or "{}").get(k) == v
                                   for k, v in where.items())]


def signals(events, task_id):
    return [r[0] for r in query(events, "select signal from events where "
                                "task_id = ? order by ts, id", (task_id,))]


@pytest.mark.timeout(120)
def test_demo_succeeds_quickly_in_a_fresh_folder(demo_run):
    assert demo_run.returncode == 0, demo_run.stdout + demo_run.stderr
    assert "UNEXPECTED" not in demo_run.stdout
    assert demo_run.elapsed < 60
    assert (demo_run.folder / MARKER).exists()
    for name in ("queue.db", "events.db", "site/index.html", "consumer.log"):
        assert (demo_run.folder / name).exists(), name
    out = demo_run.stdout
    assert "hueyscope browse %s" % demo_run.events in out
    assert "report       %s" % (demo_run.folder / "site" / "index.html") in out
    # Failing demo calls log to the file, not the terminal.
    assert "Traceback" not in out + demo_run.stderr


def test_priorities_order_the_mixed_queue(demo_run):
    # The order the consumer took tasks off the queue, as the demo prints it.
    taken = re.findall(r"^ +\d+\. (\w+) +priority +(\d+)  started", demo_run.stdout,
                       re.M)
    assert [int(p) for _, p in taken] == [100, 60, 50, 50, 50, 10, 10], taken
    # The first tasks of the demo were enqueued in another order.
    enqueued = query(demo_run.events, "select priority from tasks where task not "
                     "like 'heartbeat%' order by enqueued limit 7")
    assert [p for p, in enqueued] == [10, 50, 10, 50, 60, 50, 100]


def test_flaky_call_was_retried_twice(demo_run):
    runs = executing(demo_run.events, "flaky_network_call", fail_times=2)
    assert [r[5] for r in runs] == [1, 2, 3]
    assert signals(demo_run.events, runs[0][0]) .count("error") == 2
    assert "attempt 3  complete" in demo_run.stdout


def test_pi_estimate_carries_its_task_id(demo_run):
    (task_id, *_), = executing(demo_run.events, "cpu_pi_estimate")[-1:]
    assert "computed by task %s" % task_id in demo_run.stdout


def test_locked_jobs_ran_one_at_a_time(demo_run):
    spans = query(demo_run.events, "select started, finished from tasks "
                  "where task = 'locked_sync_job' and status = 'complete' "
                  "order by started")
    assert len(spans) == 3
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end <= start
    assert query(demo_run.events, "select count(*) from events where "
                 "task = 'locked_sync_job' and signal = 'locked'")[0][0] >= 1


def test_pipeline_seven_twenty_one_stored(demo_run):
    assert "7 -> 21 -> {'stored': 21}" in demo_run.stdout
    chain = query(demo_run.events, """select f.status, t.status, s.status
        from tasks f join tasks t on t.parent_id = f.task_id
        join tasks s on s.parent_id = t.task_id where f.task = 'fetch'""")
    assert chain == [("complete", "complete", "complete")]


def test_delayed_task_ran_and_revoked_one_never_did(demo_run):
    (task_id, ts, _, args, _, _), = [
        r for r in executing(demo_run.events, "quick_add") if r[3] == "[40, 2]"]
    enqueued = query(demo_run.events, "select enqueued from tasks where task_id = ?",
                     (task_id,))[0][0]
    assert ts - enqueued >= 1.9
    revoked = query(demo_run.events, "select task_id from tasks where status = 'revoked'")
    assert len(revoked) == 1
    assert "executing" not in signals(demo_run.events, revoked[0][0])


def test_blocking_result_with_timeout(demo_run):
    assert "timeout=0.5): ResultTimeout" in demo_run.stdout
    assert "'slept=1.5'" in demo_run.stdout


def test_heartbeats_and_graceful_stop(demo_run):
    beats = dict(query(demo_run.events, "select task, count(*) from events where "
                       "signal = 'complete' and task like 'heartbeat%' group by task"))
    assert beats.get("heartbeat_minutely", 0) >= 1
    assert beats.get("heartbeat_tick", 0) >= 1
    assert query(demo_run.events, "select stop_reason from runs "
                 "where role = 'consumer'") == [("graceful",)]
    assert query(demo_run.events, "select count(*) from tasks where status "
                 "in ('executing', 'interrupted')") == [(0,)]
    assert "stopped after" in demo_run.stdout and ": graceful;" in demo_run.stdout


def test_prepare_folder_recreates_only_demo_folders(tmp_path):
    folder = prepare_folder(tmp_path / "run")
    (folder / "queue.db").write_text("old")
    again = prepare_folder(tmp_path / "run")
    assert sorted(p.name for p in again.iterdir()) == [MARKER]
