"""Django, where most huey apps live: a real project, run as its users run it.

``tests/django_project`` is a small Django project set up as docs/django.md
says: ``HUEY = hueyscope.SqliteHuey(...)`` in its settings,
``hueyscope.attach()`` in ``AppConfig.ready``, ``db_task`` and
``db_periodic_task`` from djhuey, the ``huey`` logger configured in
LOGGING. Each test copies it into a temporary folder, migrates its database
and runs it with real processes: ``manage.py run_huey`` (huey's own
consumer), ``hueyscope consume --app djsite.settings:HUEY``, ``manage.py
shell`` to enqueue and ``manage.py test``, stopped with real signals.
"""
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Started, assert_one_line_error, cli_env, query, run_cli
from conftest import scalar, start_cli, wait_until

pytest.importorskip("django")

PROJECT = Path(__file__).parent / "django_project"
APP = "djsite.settings:HUEY"


class ManagePy(Started):
    """``python manage.py ARGS`` running in the background (see Started)."""

    def command(self, args):
        return [sys.executable, "manage.py", *map(str, args)]


class Project:
    """A copy of the test project in ``folder``, with its own files."""

    def __init__(self, folder, **env):
        self.folder = Path(folder)
        self.env = cli_env(self.folder, DJANGO_SETTINGS_MODULE=None, **env)
        self.events = self.folder / "events.db"
        self.database = self.folder / "db.sqlite3"
        self._started = []

    def manage(self, *args, timeout=60):
        return subprocess.run([sys.executable, "manage.py", *map(str, args)],
                              cwd=str(self.folder), env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def start_manage(self, *args, name="run_huey"):
        started = ManagePy(args, self.folder, self.env, name)
        self._started.append(started)
        return started

    def consume(self, *args, name="consume", **env):
        started = start_cli(["consume", "--app", APP, *args], self.folder,
                            env=dict(self.env, **env), name=name)
        self._started.append(started)
        return started

    def enqueue(self, code):
        """Run ``code`` in ``manage.py shell``: the web process's side."""
        result = self.manage("shell", "-c", code)
        assert result.returncode == 0, result.stderr

    def orders(self):
        return query(self.database, "select number, attempt from shop_order "
                     "order by number")

    def statuses(self, events=None):
        return dict(query(events or self.events,
                          "select status, count(*) from tasks group by status"))

    def consumer_run(self, events=None):
        rows = query(events or self.events,
                     "select id, workers, worker_type, stop_reason from runs "
                     "where role = 'consumer' order by started")
        return rows[-1] if rows else None

    def close(self):
        for started in self._started:
            started.kill()


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "project"
    shutil.copytree(PROJECT, folder, ignore=shutil.ignore_patterns(
        "__pycache__", "*.sqlite3", "*.db", "*.db-*"))
    runner = Project(folder)
    result = runner.manage("migrate", "-v", "0")
    assert result.returncode == 0, result.stderr
    yield runner
    runner.close()


def _complete(project, n, consumer, events=None):
    wait_until(lambda: project.statuses(events).get("complete", 0) >= n
               or consumer.proc.poll() is not None, timeout=30,
               message="%d tasks complete" % n)
    assert consumer.proc.poll() is None, consumer.describe()
    assert project.statuses(events) == {"complete": n}, consumer.describe()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signum, options", [
    (signal.SIGINT, []),
    (signal.SIGTERM, ["--graceful-signal", "TERM"]),
], ids=["sigint", "sigterm"])
def test_run_huey_runs_db_tasks_and_records_the_run(project, signum, options):
    # huey's own consumer, the Django way: its workers, queue samples and
    # graceful stop are recorded as hueyscope's consumer records them.
    consumer = project.start_manage("run_huey", "--workers", 2, *options)
    project.enqueue("from shop.tasks import record_order\n"
                    "for n in range(5): record_order(n)")
    _complete(project, 5, consumer)
    assert [n for n, _ in project.orders()] == list(range(5))
    run_id = project.consumer_run()[0]
    wait_until(lambda: scalar(project.events, "select count(*) from "
                              "queue_samples where run_id = ?", (run_id,)),
               timeout=15, message="a queue sample of the run_huey run")
    assert consumer.stop(signum) == 0, consumer.describe()
    assert project.consumer_run() == (run_id, 2, "thread", "graceful")
    assert consumer.stderr.count("Huey consumer started") == 1, consumer.stderr


@pytest.mark.timeout(60)
def test_consume_loads_the_settings_module_and_runs_db_tasks(project):
    consumer = project.consume("--workers", "2")
    project.enqueue("from shop.tasks import record_order\n"
                    "for n in range(5): record_order(n)")
    _complete(project, 5, consumer)
    assert [n for n, _ in project.orders()] == list(range(5))
    assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()
    run = project.consumer_run()
    assert run[1:] == (2, "thread", "graceful")
    # Every task of every installed app's tasks.py, periodic ones too.
    periodic = scalar(project.events, "select periodic from runs where id = ?",
                      (run[0],))
    assert periodic == '["nightly_cleanup"]'
    assert "shop.tasks.ledger_job" in consumer.stderr


@pytest.mark.timeout(60)
def test_consume_prints_each_log_line_once(project):
    # The project's LOGGING gives the huey logger a handler of its own.
    consumer = project.consume()
    wait_until(lambda: "The following commands are available" in consumer.stderr
               or consumer.proc.poll() is not None, timeout=30,
               message="the consumer's start-up lines")
    assert consumer.stop(signal.SIGINT) == 0, consumer.describe()
    err = consumer.stderr
    for line in ("Huey consumer started", "The following commands are available",
                 "hueyscope consumer:", "Consumer exiting (graceful)"):
        assert err.count(line) == 1, err
    assert "djsite huey.consumer: Huey consumer started" in err


def _start(project, how):
    if how == "run_huey":
        return project.start_manage("run_huey", "--workers", 1)
    return project.consume("--workers", "1")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("how", [
    "consume", "run_huey"])
def test_a_task_killed_mid_way_runs_again_with_its_lock_freed(project, how):
    # At-least-once: the task held the ledger lock when its consumer was
    # killed; under the next consumer it runs again, and takes the lock.
    first = _start(project, how)
    project.enqueue("from shop.tasks import ledger_job\nledger_job(1)")
    wait_until(lambda: (project.folder / "started-1").exists()
               or first.proc.poll() is not None, timeout=30,
               message="the task to start")
    first.kill()  # SIGKILL, mid-task
    (project.folder / "release").write_text("")
    second = _start(project, how)
    wait_until(lambda: project.orders() or second.proc.poll() is not None,
               timeout=30, message="the killed task to run again")
    assert project.orders() == [(1, 2)], second.describe()
    _complete(project, 1, second)
    assert scalar(project.events, "select count(*) from events "
                  "where signal = 'locked'") == 0
    assert second.stop(signal.SIGINT) == 0, second.describe()


@pytest.mark.timeout(90)
def test_manage_py_test_runs_tasks_in_immediate_mode(project):
    result = project.manage("test", "shop", timeout=80)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stderr


@pytest.mark.timeout(60)
def test_an_app_with_no_tasks_is_refused(project):
    # The same project without the app whose tasks.py defines them.
    result = run_cli(["consume", "--app", "djsite.settings_notasks:HUEY"],
                     project.folder, env=project.env, timeout=30)
    assert_one_line_error(result)
    assert "djsite.settings_notasks:HUEY has no tasks registered (no tasks.py " \
           "of INSTALLED_APPS defines one)" in result.stderr


@pytest.mark.timeout(60)
def test_a_plain_app_with_no_tasks_is_refused(tmp_path):
    (tmp_path / "bare.py").write_text(
        "import hueyscope\nhuey = hueyscope.SqliteHuey('bare', filename='bare.db')\n")
    result = run_cli(["consume", "--app", "bare:huey"], tmp_path, timeout=30)
    assert_one_line_error(result)
    assert "bare:huey has no tasks registered" in result.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("given", ["flag", "variable"])
def test_events_elsewhere_than_the_apps_own_attach_is_refused(project, given):
    # The app attaches with events=... of its own (see shop/apps.py).
    project.env["DJSITE_EVENTS"] = str(project.folder / "app-events.db")
    other = project.folder / "other.db"
    args = ["consume", "--app", APP]
    env = dict(project.env, HUEYSCOPE_EVENTS=other)
    if given == "flag":
        args += ["--events", other]
        env.pop("HUEYSCOPE_EVENTS")
    result = run_cli(args, project.folder, env=env, timeout=30)
    assert_one_line_error(result)
    assert "djsite.settings:HUEY records to %s" % (
        project.folder / "app-events.db") in result.stderr
    assert not other.exists()
    assert not (project.folder / "app-events.db").exists()


@pytest.mark.timeout(60)
def test_without_events_given_consume_records_where_the_app_does(project):
    app_events = project.folder / "app-events.db"
    project.env["DJSITE_EVENTS"] = str(app_events)
    project.env.pop("HUEYSCOPE_EVENTS")
    consumer = project.consume()
    project.enqueue("from shop.tasks import record_order\nrecord_order(1)")
    _complete(project, 1, consumer, events=app_events)
    assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()
    assert "events in %s" % app_events in consumer.stderr
    assert project.consumer_run(app_events)[3] == "graceful"
    assert not project.events.exists()
