"""Shared fixtures: the hueyscope CLI as real processes, and a real event store.

Everything here runs real code: ``hueyscope`` subprocesses on real SQLite
files in a temporary folder, stopped with real signals. Helpers:

- :func:`cli_env` / :func:`run_cli` / :func:`start_cli`: run the command line
  with a temp cwd and its own ``HUEYSCOPE_*`` environment.
- :func:`wait_until`: poll a condition with a deadline (never a bare sleep).
- :func:`query`: read an SQLite file (read-only) while others write it.

Fixtures: ``cli`` (a :class:`CLI` bound to ``tmp_path``), ``recorded_store``
(session-scoped events.db filled by real produce + consume processes) and
``recorded_expected`` (what is known to be in it).
"""
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
HUEYSCOPE = BIN / "hueyscope"


def cli_env(folder, **extra):
    """os.environ with every HUEYSCOPE_* setting pointing into ``folder``.

    Keyword arguments add or override variables (a value of None removes one).
    """
    folder = Path(folder)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUEYSCOPE_")}
    env.update({
        "HUEYSCOPE_QUEUE": str(folder / "queue.db"),
        "HUEYSCOPE_EVENTS": str(folder / "events.db"),
        "HUEYSCOPE_SITE": str(folder / "site"),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


def _command(args):
    if HUEYSCOPE.exists():
        return [str(HUEYSCOPE), *map(str, args)]
    return [sys.executable, "-c", "from hueyscope.cli import cli; cli()",
            *map(str, args)]


def run_cli(args, cwd, env=None, timeout=60, input=None):
    """Run ``hueyscope ARGS`` to completion; a CompletedProcess with text output."""
    return subprocess.run(
        _command(args), cwd=str(cwd), env=env if env is not None else cli_env(cwd),
        capture_output=True, text=True, timeout=timeout, input=input)


class Started:
    """A running ``hueyscope`` process whose output goes to files (no pipe
    can fill up and block it). Subclasses run another program by naming its
    command line in :meth:`command`."""

    def command(self, args):
        return _command(args)

    def __init__(self, args, cwd, env, name):
        self.cwd = Path(cwd)
        self.stdout_path = self.cwd / ("%s.out" % name)
        self.stderr_path = self.cwd / ("%s.err" % name)
        self._out = open(self.stdout_path, "w")
        self._err = open(self.stderr_path, "w")
        # Its own session: signals sent to it never reach pytest.
        self.proc = subprocess.Popen(
            self.command(args), cwd=str(cwd), env=env, stdout=self._out,
            stderr=self._err, start_new_session=True)
        self.pid = self.proc.pid

    @property
    def stdout(self):
        return self.stdout_path.read_text()

    @property
    def stderr(self):
        return self.stderr_path.read_text()

    def send(self, signum):
        self.proc.send_signal(signum)

    def send_group(self, signum):
        """Signal the whole process group, as a terminal's Ctrl-C does."""
        os.killpg(self.proc.pid, signum)

    def wait(self, timeout=30):
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.returncode is not None:
                self._out.close()
                self._err.close()

    def stop(self, signum=signal.SIGTERM, timeout=30):
        """Signal it and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.send(signum)
        return self.wait(timeout)

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)
        self._out.close()
        self._err.close()

    def describe(self):
        return "exit %s\n--- stdout\n%s\n--- stderr\n%s" % (
            self.proc.poll(), self.stdout[-3000:], self.stderr[-5000:])


def start_cli(args, cwd, env=None, name="hueyscope"):
    """Start ``hueyscope ARGS`` in the background; a :class:`Started`."""
    return Started(args, cwd, env if env is not None else cli_env(cwd), name)


def wait_until(predicate, timeout=30.0, interval=0.05, message="condition"):
    """Poll ``predicate`` until it returns something truthy; return that.

    Fails the test with ``message`` if ``timeout`` seconds pass first; a
    callable ``message`` is called then, to say what the wait found (a
    process's output, say).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail("timed out after %ss waiting for %s" % (
                timeout, message() if callable(message) else message))
        time.sleep(interval)


def query(path, sql, params=()):
    """Rows of ``sql`` on the SQLite file at ``path`` ([] if it is not there
    yet or lacks the table), read-only, safe while another process writes."""
    if not Path(path).exists():
        return []
    conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()


def scalar(path, sql, params=()):
    rows = query(path, sql, params)
    return rows[0][0] if rows else None


class CLI:
    """The hueyscope command line, run in one folder with its own settings."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.env = cli_env(self.folder)
        self.queue = self.folder / "queue.db"
        self.events = self.folder / "events.db"
        self.site = self.folder / "site"
        self._started = []

    def run(self, *args, timeout=60, env=None, **extra_env):
        env = env if env is not None else dict(self.env, **{
            k: str(v) for k, v in extra_env.items()})
        return run_cli(args, self.folder, env=env, timeout=timeout)

    def start(self, *args, name="hueyscope", **extra_env):
        env = dict(self.env, **{k: str(v) for k, v in extra_env.items()})
        started = start_cli(args, self.folder, env=env, name=name)
        self._started.append(started)
        return started

    def task_statuses(self):
        """{status: count} of the tasks table of this folder's event store."""
        return dict(query(self.events,
                          "select status, count(*) from tasks group by status"))

    def close(self):
        for started in self._started:
            started.kill()


@pytest.fixture
def cli(tmp_path):
    """A :class:`CLI` in a fresh folder; its background processes are
    killed at the end of the test, whatever happened."""
    runner = CLI(tmp_path)
    yield runner
    runner.close()


REQUIRE_SERVERS = "HUEYSCOPE_REQUIRE_SERVERS"


def require_server(name, url, exc):
    """Skip the test: the server at ``url`` is not there (fail instead in CI).

    ``.ci/run`` sets HUEYSCOPE_REQUIRE_SERVERS=1: there, the machine has
    PostgreSQL and Redis, and a test that cannot reach them has failed.
    """
    message = "%s is not reachable at %s: %s" % (
        name, url, (str(exc).strip().splitlines() or [""])[0])
    if os.environ.get(REQUIRE_SERVERS) == "1":
        pytest.fail(message)
    pytest.skip(message)


POSTGRES = os.environ.get("HUEYSCOPE_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test")


@contextlib.contextmanager
def postgres_schema(prefix="hs_"):
    """A PostgreSQL schema of its own on the test server, dropped afterwards.

    Yields ``(admin, schema, url)``: an autocommit connection, the schema's
    name, and the queue URL whose search_path is that schema. Skips (fails
    in CI) when the server cannot be reached.
    """
    import uuid

    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        require_server("PostgreSQL", POSTGRES, exc)
    schema = prefix + uuid.uuid4().hex[:12]
    admin.execute("create schema %s" % schema)
    try:
        yield admin, schema, "%s?options=-csearch_path%%3D%s" % (POSTGRES, schema)
    finally:
        admin.execute("drop schema %s cascade" % schema)
        admin.close()


def assert_one_line_error(result):
    """Exit code 2, one ``Error: ...`` line on stderr, no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr + result.stdout
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout


# -- the recorded store ---------------------------------------------------

RECORDED_SCENARIOS = ("mixed", "flaky", "locks", "pipeline", "schedule")

# What the recorded store holds for sure (counts that do not depend on
# timing). "locked" collisions depend on timing: at least one, and every
# 'locked' signal is followed by a 'retrying' one.
RECORDED_EXPECTED = {
    "scenarios": RECORDED_SCENARIOS,
    "producer_runs": len(RECORDED_SCENARIOS),
    "consumer_runs": 1,
    "consumer_stop_reason": "graceful",
    "workers": 4,
    "tasks": 18,
    # tasks per final status
    "status": {"complete": 15, "failed": 1, "revoked": 1, "expired": 1},
    # tasks per name
    "task_names": {
        "slow_io": 3, "quick_add": 5, "cpu_pi_estimate": 1,
        "flaky_network_call": 3, "locked_sync_job": 3,
        "fetch": 1, "transform": 1, "store": 1,
    },
    # exact counts of these signals
    "signals": {"complete": 15, "error": 6, "revoked": 1, "expired": 1,
                "interrupted": 0},
    "min_locked": 1,
    # retrying == retrying_without_locks + locked
    "retrying_without_locks": 5,
    # executing == executing_without_locks + locked
    "executing_without_locks": 21,
    # attempts of the flaky calls, by their fail_times argument
    "flaky_attempts": {0: 1, 2: 3, 4: 4},
    "pipeline": (7, 21, {"stored": 21}),
    "error_message": "transient failure",
}


@pytest.fixture(scope="session")
def recorded_expected():
    """The numbers known to be in ``recorded_store`` (see RECORDED_EXPECTED)."""
    return RECORDED_EXPECTED


@pytest.fixture(scope="session")
def recorded_store(tmp_path_factory):
    """Path of an events.db filled by real processes, for read-only tests.

    Five ``hueyscope produce`` processes (mixed, flaky, locks, pipeline,
    schedule) enqueue into one SQLite queue, then one ``hueyscope consume``
    process (4 thread workers, no periodic tasks) runs everything and is
    stopped with SIGTERM once every task reached its final status. The queue
    is next to it (``queue.db``). Do not write to it: copy it first.
    """
    folder = tmp_path_factory.mktemp("recorded")
    env = cli_env(folder)
    for name in RECORDED_SCENARIOS:
        result = run_cli(["produce", name], folder, env=env)
        assert result.returncode == 0, result.stderr
    consumer = start_cli(
        ["consume", "--workers", RECORDED_EXPECTED["workers"], "--no-periodic",
         "--heartbeat-every", "0.5", "--max-delay", "0.5"],
        folder, env=env, name="consumer")
    events = folder / "events.db"
    final = tuple(RECORDED_EXPECTED["status"])
    try:
        wait_until(
            lambda: scalar(events, "select count(*) from tasks where status in "
                           "(%s)" % ",".join("?" * len(final)), final)
            == RECORDED_EXPECTED["tasks"] or consumer.proc.poll() is not None,
            timeout=60, message="every recorded task to finish")
        assert consumer.proc.poll() is None, consumer.describe()
        code = consumer.stop(signal.SIGTERM, timeout=30)
        assert code == 0, consumer.describe()
    finally:
        consumer.kill()
    return events


@contextlib.contextmanager
def environ_restored(prefixes):
    """Put back, on leaving, the environment variables starting with
    ``prefixes``: what a test's open_app exported stays out of the rest of
    the session."""
    saved = {k: v for k, v in os.environ.items() if k.startswith(prefixes)}
    try:
        yield
    finally:
        for key in [k for k in os.environ if k.startswith(prefixes)]:
            if key not in saved:
                del os.environ[key]
        os.environ.update(saved)
