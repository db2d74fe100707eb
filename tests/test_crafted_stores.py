"""Crafted files against every command that reads them.

A real event store (tests/synthetic.py) and a real queue (``hueyscope
produce``) are each turned hostile in the ways of tests/crafted.py: a
migrations table or ``tasks`` replaced by a view that never ends, a trigger
that writes when rows are deleted, values of 50 MB, text that is not UTF-8.
Every reading command runs on each as ``python -m hueyscope`` in a process
of its own and must end in bounded time with one clear line, exit 2 and the
file byte for byte as it was -- or, for invalid UTF-8, show the text
replaced and succeed. The 50 MB values must not be loaded: each command's
peak memory (its own, from wait4) stays far below what reading one would
take.
"""
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

import crafted
from conftest import assert_one_line_error, cli_env, run_cli, wait_until
from synthetic import build_synthetic

REFUSED = ("never_ending_migrations", "tasks_view", "foreign_trigger")
# Peak resident memory a command may reach on a store holding 50 MB values:
# about what it needs on any small store. Reading one such value would take
# SQLite's copy and Python's, over 100 MB on top.
MAX_RSS_BYTES = 150 * 1000 * 1000


@pytest.fixture(scope="module")
def real_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("real-store") / "events.db"
    build_synthetic(path, events=3000, seed=3, days=2)
    return path


@pytest.fixture(scope="module")
def real_queue(tmp_path_factory):
    folder = tmp_path_factory.mktemp("real-queue")
    result = run_cli(["produce", "mixed"], folder, env=cli_env(folder))
    assert result.returncode == 0, result.stderr
    return folder / "queue.db"


@pytest.fixture(scope="module", params=sorted(crafted.STORE_CRAFTS))
def crafted_files(request, real_store, real_queue, tmp_path_factory):
    """(name, crafted event store, crafted queue), with their digests."""
    name = request.param
    folder = tmp_path_factory.mktemp("crafted-" + name)
    store = crafted.craft(real_store, folder / "events.db",
                          crafted.STORE_CRAFTS[name])
    queue = crafted.craft(real_queue, folder / "queue.db",
                          crafted.QUEUE_CRAFTS[name])
    yield name, store, queue
    for path in (store, queue):
        path.unlink()  # the big ones take 100 MB each


# ``python -m hueyscope ARGS`` that writes, as it exits, the peak resident
# memory of its own (VmHWM: since exec; getrusage's figure for a child would
# include this test process's, which the child's memory map came from).
MEASURED = textwrap.dedent("""
    import atexit, runpy, sys

    def peak(path=sys.argv[1]):
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                open(path, "w").write(line.split()[1])

    atexit.register(peak)
    sys.argv = ["hueyscope"] + sys.argv[2:]
    runpy.run_module("hueyscope", run_name="__main__", alter_sys=True)
""")


def run_measured(args, cwd, timeout=90):
    """Run ``python -m hueyscope ARGS``; (exit code, stdout, stderr, peak RSS
    in bytes)."""
    out, err, hwm = cwd / "cmd.out", cwd / "cmd.err", cwd / "cmd.hwm"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", MEASURED, hwm, *map(str, args)],
            cwd=str(cwd), env=cli_env(cwd), stdout=stdout, stderr=stderr,
            start_new_session=True)
    try:
        code = proc.wait(timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return code, out.read_text(), err.read_text(), int(hwm.read_text()) * 1024


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def commands(store, queue, folder, prunable, app_queue):
    """Every command that reads an event store or a queue, by name.

    A store whose schema is ours is pruned as it should be, so ``prune``
    gets a copy of it (``prunable``). ``check`` opens the app, whose huey
    opens its queue for writing, when a consumer declared periodic tasks:
    it gets a copy of a queue whose schema is ours (``app_queue``).
    """
    return {
        "report": ["report", store, "--out", folder / "site"],
        "check": ["check", "--events", store, "--queue", app_queue],
        "metrics": ["metrics", "--events", store, "--queue", queue,
                    "--textfile", folder / "m.prom"],
        "prune": ["prune", "--older-than", "1d", "--events", prunable],
        "status": ["status", "--queue", queue],
        "browse": ["browse", store, "--port", "0"],
    }


@pytest.mark.timeout(600)
def test_every_reader_refuses_or_bounds_a_crafted_file(crafted_files, tmp_path):
    name, store, queue = crafted_files
    before = {path: crafted.digest(path) for path in (store, queue)}
    siblings = sorted(os.listdir(store.parent))
    prunable, app_queue = store, queue
    if name not in REFUSED:
        prunable = shutil.copy(store, tmp_path / "copy.db")
        app_queue = shutil.copy(queue, tmp_path / "queue-copy.db")
    outcomes = {}
    for command, args in commands(store, queue, tmp_path, prunable,
                                  app_queue).items():
        if command == "browse" and name not in REFUSED:
            continue  # it would serve: the Datasette side is tested apart
        code, out, err, rss = run_measured(args, tmp_path)
        outcomes[command] = Result(code, out, err)
        assert rss < MAX_RSS_BYTES, (command, rss)
        assert "Traceback" not in out + err, (command, err)
    after = {path: crafted.digest(path) for path in (store, queue)}
    assert after == before
    # Nothing left beside them either: no -wal, -shm or -journal.
    assert sorted(os.listdir(store.parent)) == siblings
    expect = EXPECT[name]
    for command, result in outcomes.items():
        expect(command, result, tmp_path)


def refused(command, result, folder):
    assert_one_line_error(result)
    assert "left unchanged" in result.stderr, (command, result.stderr)
    assert not (folder / "site").exists()
    assert not (folder / "m.prom").exists()


def big(command, result, folder):
    """Values over the limit: a clear error where they are read."""
    too_big = "over 1048576 bytes"
    if command in ("report", "status"):
        assert_one_line_error(result)
        assert too_big in result.stderr, (command, result.stderr)
    elif command == "metrics":
        # A scrape that cannot read the store says so, and event_store_up 0.
        assert result.returncode == 0, result.stderr
        assert too_big in result.stderr and len(result.stderr.splitlines()) == 1
        assert "hueyscope_event_store_up 0.0" in (folder / "m.prom").read_text()
    elif command == "check":  # its rules never read those columns
        assert result.returncode in (0, 1), result.stderr
    else:  # prune deletes them without reading them
        assert result.returncode == 0, result.stderr


def replaced(command, result, folder):
    """Invalid UTF-8 is shown with U+FFFD, nothing fails."""
    if command == "check":
        assert result.returncode in (0, 1), result.stderr
        return
    assert result.returncode == 0, (command, result.stderr)
    if command == "report":
        text = (folder / "site" / "failures.html").read_text()
        assert "o\ufffdk" in text
        assert "\ufffdname" in (folder / "site" / "index.html").read_text()
    elif command == "metrics":
        assert result.stderr == ""
        text = (folder / "m.prom").read_text()
        assert "hueyscope_event_store_up 1.0" in text
        assert '"\ufffdname"' in text
    elif command == "status":
        assert "queue q\ufffd" in result.stdout


EXPECT = {"never_ending_migrations": refused, "tasks_view": refused,
          "foreign_trigger": refused, "big_value": big,
          "invalid_utf8": replaced}


STOPPED_MID_QUERY = textwrap.dedent("""
    import sys
    from hueyscope.metrics.command import _stop_event
    from hueyscope.readonly import QueryStopped, connect

    stop = _stop_event()
    conn = connect(":memory:", seconds=None)
    print("querying", flush=True)
    try:
        conn.execute("with recursive c(x) as (select 1 union all "
                     "select x + 1 from c) select count(*) from c").fetchall()
    except QueryStopped as exc:
        print("stopped: %s" % exc, file=sys.stderr)
        sys.exit(0 if stop.is_set() else 3)
    sys.exit(4)
""")


@pytest.mark.timeout(60)
def test_metrics_stop_signal_ends_a_query_under_way(tmp_path):
    """SIGTERM stops metrics even while SQLite runs a query that never ends.

    The query runs in the main thread, where Python runs signal handlers
    only between its own steps: the progress handler of every guarded
    connection gives it those steps, and stops the query once metrics' own
    handler has asked for it.
    """
    out = open(tmp_path / "out", "w")
    err = open(tmp_path / "err", "w")
    proc = subprocess.Popen([sys.executable, "-c", STOPPED_MID_QUERY],
                            stdout=out, stderr=err, start_new_session=True)
    try:
        wait_until(lambda: "querying" in (tmp_path / "out").read_text(),
                   message="the query to start")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, (tmp_path / "err").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()
        err.close()
    assert "stopped (a signal asked to stop)" in (tmp_path / "err").read_text()
