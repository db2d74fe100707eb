"""``hueyscope demo``: one real run, every behaviour asserted on its event store."""
import json
import os
import re
import shlex
import signal
import subprocess
import time

import httpx
import pytest

from conftest import BIN, query, run_cli, cli_env, wait_until
from hueyscope.demo import MARKER, prepare_folder
from report_helpers import as_int, parse

# A shell in which the virtualenv is not active: its bin folder is not on PATH.
PLAIN_PATH = os.pathsep.join(
    p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
    if p and os.path.realpath(p) != os.path.realpath(BIN)) or "/usr/bin:/bin"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("demo")
    started = time.monotonic()
    result = run_cli(["demo"], cwd, env=cli_env(cwd / "unused", PATH=PLAIN_PATH),
                     timeout=90)
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
    assert "browse %s" % demo_run.events in out
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


def test_locked_card_counts_every_collision(demo_run):
    collisions = query(demo_run.events, "select count(*) from events where "
                       "task = 'locked_sync_job' and signal = 'locked'")[0][0]
    printed = re.search(r"(\d+) attempt\(s\) found the lock taken", demo_run.stdout)
    assert printed and int(printed.group(1)) == collisions >= 1
    stats = parse(demo_run.folder / "site" / "index.html").stats
    assert as_int(stats["Locked"]) == collisions


def _url(text):
    match = re.search(r"Serving at (http://\S+/)", text)
    return match.group(1) if match else None


def _answers(url):
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _next_commands(stdout):
    lines = stdout.split("\nNext:\n", 1)[1].strip().splitlines()
    return [shlex.split(line) for line in lines]


@pytest.mark.timeout(90)
def test_next_commands_work_with_the_virtualenv_inactive(demo_run, tmp_path):
    commands = _next_commands(demo_run.stdout)
    assert [c[c.index("browse") if "browse" in c else c.index("status")]
            for c in commands] == ["browse", "status"]
    env = dict(cli_env(tmp_path), PATH=PLAIN_PATH)
    browse, status = commands
    result = subprocess.run(status, cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "queue hueyscope" in result.stdout
    out = tmp_path / "browse.out"
    with open(out, "w") as stdout:
        served = subprocess.Popen(browse + ["--port", "0"], cwd=tmp_path, env=env,
                                  stdout=stdout, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        url = wait_until(lambda: _url(out.read_text()) or served.poll() is not None,
                         timeout=60, message="the printed browse command to listen")
        assert served.poll() is None, out.read_text()
        wait_until(lambda: _answers(url + "events.json"), timeout=30,
                   message="the event store to be served")
        served.send_signal(signal.SIGTERM)
        assert served.wait(30) == 0
    finally:
        if served.poll() is None:
            os.killpg(served.pid, signal.SIGKILL)
            served.wait(10)
