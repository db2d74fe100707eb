"""Who may read what hueyscope writes: the modes of every file it creates.

Real commands run under umask 022 (the usual) and 077, in a subprocess each:
producer, consumer, report, metrics textfile. The queue and the event store,
with their -wal, -shm and the store's reserve, are owner-only whatever the
umask; the report and the textfile follow the umask; a file that was there
before keeps the mode its owner gave it.
"""
import os
import signal
import stat
from pathlib import Path

import pytest

from conftest import _command, cli_env, scalar, wait_until

PRIVATE = ("queue.db", "queue.db-wal", "queue.db-shm", "events.db",
           "events.db-wal", "events.db-shm", "events.db-reserve")
LOGS = ("consumer.out", "consumer.err")  # the test's own, not hueyscope's


def _mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def _umasked(umask, folder=False):
    return (0o777 if folder else 0o666) & ~umask


class UmaskCLI:
    """``hueyscope`` run through ``sh`` with a given umask, in one folder."""

    def __init__(self, folder, umask):
        self.folder, self.umask = Path(folder), umask
        self.env = cli_env(self.folder)
        self._started = []

    def _args(self, args):
        return ["sh", "-c", 'umask %03o && exec "$@"' % self.umask, "sh",
                *_command(args)]

    def run(self, *args, timeout=60):
        import subprocess

        return subprocess.run(self._args(args), cwd=self.folder, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def start(self, *args, name):
        import subprocess

        out = open(self.folder / ("%s.out" % name), "w")
        err = open(self.folder / ("%s.err" % name), "w")
        proc = subprocess.Popen(self._args(args), cwd=self.folder, env=self.env,
                                stdout=out, stderr=err, start_new_session=True)
        self._started.append((proc, out, err))
        return proc

    def close(self):
        for proc, out, err in self._started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            out.close()
            err.close()


@pytest.fixture
def umask_cli(tmp_path, request):
    runners = []

    def make(umask, name="run"):
        folder = tmp_path / name
        folder.mkdir()
        runner = UmaskCLI(folder, umask)
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        runner.close()


def _all_files(folder):
    """{relative path: mode} of everything under ``folder``."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            found[str(path.relative_to(folder))] = _mode(path)
    return found


def _consume_until_done(cli):
    """A consumer that runs the queue, stopped by SIGTERM once it is done;
    {file: mode} of the folder taken while it still runs."""
    consumer = cli.start("consume", "--no-periodic", "--workers", "2",
                         "--heartbeat-every", "0.5", "--max-delay", "0.5",
                         name="consumer")
    events = cli.folder / "events.db"

    def running_with_every_file():
        assert consumer.poll() is None, (cli.folder / "consumer.err").read_text()
        return all((cli.folder / f).exists() for f in PRIVATE) and scalar(
            events, "select count(*) from tasks where status = 'complete'")

    wait_until(running_with_every_file, timeout=60,
               message="the consumer to run tasks with every file open")
    while_running = {f: _mode(cli.folder / f) for f in PRIVATE}
    consumer.send_signal(signal.SIGTERM)
    assert consumer.wait(30) == 0, (cli.folder / "consumer.err").read_text()
    return while_running


@pytest.mark.timeout(180)
@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask 022", "umask 077"])
def test_every_file_created_has_the_mode_it_should(umask_cli, umask):
    cli = umask_cli(umask)
    result = cli.run("produce", "mixed")
    assert result.returncode == 0, result.stderr
    while_running = _consume_until_done(cli)
    assert while_running == {f: 0o600 for f in PRIVATE}
    result = cli.run("report")
    assert result.returncode == 0, result.stderr
    result = cli.run("metrics", "--textfile", "hueyscope.prom")
    assert result.returncode == 0, result.stderr

    found = _all_files(cli.folder)
    site = {f: m for f, m in found.items() if f == "site" or f.startswith("site/")}
    assert site["site/index.html"]
    for name, mode in site.items():
        is_folder = (cli.folder / name).is_dir()
        assert mode == _umasked(umask, is_folder), (name, oct(mode))
    assert found["hueyscope.prom"] == _umasked(umask)
    rest = {f: m for f, m in found.items()
            if f not in site and f not in LOGS and f != "hueyscope.prom"}
    # Everything else is the queue's and the store's, and owner-only.
    assert set(rest) <= set(PRIVATE), sorted(rest)
    assert {"queue.db", "events.db", "events.db-reserve"} <= set(rest)
    assert rest == {f: 0o600 for f in rest}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask 022", "umask 077"])
def test_a_file_that_was_there_keeps_its_owners_mode(umask_cli, umask):
    cli = umask_cli(umask)
    folder = cli.folder
    for name in ("queue.db", "events.db", "hueyscope.prom"):
        (folder / name).touch()
        os.chmod(folder / name, 0o640)
    (folder / "site").mkdir()
    (folder / "site" / ".hueyscope-report").write_text("an earlier report\n")
    os.chmod(folder / "site", 0o750)

    result = cli.run("produce", "mixed")
    assert result.returncode == 0, result.stderr
    while_running = _consume_until_done(cli)
    # SQLite gives the -wal and -shm their main file's mode.
    assert while_running == dict({f: 0o640 for f in PRIVATE},
                                 **{"events.db-reserve": 0o600})
    for args in (("report",), ("metrics", "--textfile", "hueyscope.prom")):
        result = cli.run(*args)
        assert result.returncode == 0, result.stderr
    assert _mode(folder / "queue.db") == 0o640
    assert _mode(folder / "events.db") == 0o640
    assert _mode(folder / "hueyscope.prom") == 0o640
    # The rebuilt report replaced the folder, and kept its mode.
    assert (folder / "site" / "index.html").exists()
    assert _mode(folder / "site") == 0o750
    assert _mode(folder / "site" / "index.html") == _umasked(umask)
