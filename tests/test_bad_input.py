"""Bad input: one ``Error:`` line, exit code 2, no traceback, no file touched."""
import hashlib
import sqlite3

import pytest

from conftest import assert_one_line_error

NOT_SQLITE = b"id,name\n1,not a database\n"


@pytest.mark.parametrize("args,message", [
    (["produce", "nope"], "Invalid value for 'SCENARIO': 'nope' is not one of"),
    (["produce", "load", "--count", "-1"], "-1 is not in the range x>=0"),
    (["produce", "load", "--count", "ten"], "'--count': 'ten' is not a whole number"),
    (["produce", "load", "--count", "1.5"], "'1.5' is not a whole number"),
    (["produce", "mixed", "--timeout", "-5"], "--timeout"),
    (["produce", "mixed", "--timeout", "soon"], "'soon' is not a number"),
    # Options a command does not use, it does not offer; a usage error is
    # one line too.
    (["produce", "mixed", "--app", "os:path"],
     "No such option '--app' (see hueyscope produce --help)"),
    (["status", "--durability", "full"], "No such option '--durability'"),
    (["status", "--delivery", "at-least-once"], "No such option '--delivery'"),
    (["recover", "--delivery", "at-most-once"], "recover needs at-least-once delivery"),
    (["produce"], "Missing argument 'SCENARIO'. Choose from: flaky, load,"),
    (["consume", "extra"], "unexpected extra argument (extra)"),
    (["nosuchcommand"], "No such command 'nosuchcommand' (see hueyscope --help)"),
    (["consume", "--workers", "0"], "0 is not in the range x>=1"),
    (["consume", "--workers", "many"], "'many' is not a whole number"),
    (["consume", "--worker-type", "fiber"], "'fiber' is not one of 'thread', 'process'"),
    (["consume", "--max-delay", "-1"], "--max-delay"),
    (["consume", "--scheduler-interval", "7"], "must be a factor of 60"),
    (["consume", "--app", "no_such_module_xyz:huey"],
     "cannot import no_such_module_xyz: no module named no_such_module_xyz"),
    (["consume", "--app", "os:path"], "os:path is a module, not a Huey instance"),
    (["consume", "--app", "json:dumps"], "json:dumps is a function, not a Huey instance"),
    (["consume", "--app", "os:no_such_attr"], "module os has no attribute no_such_attr"),
    (["consume", "--app", "hueyscope.demo_tasks"], "--app must look like module:attribute"),
    (["consume", "--app", ".relative:huey"], "--app must look like module:attribute "
     "or path/to/file.py:attribute, not '.relative:huey'"),
    (["consume", "--app", "./missing.py:huey"], "cannot import ./missing.py: no such file"),
    (["consume", "--app", "./notes.txt:huey"],
     "path/to/file.py:attribute: ./notes.txt is not a .py file"),
    (["recover", "--app", "no/such/dir/app.py:huey"], "no such file"),
    (["consume", "--queue", "missing/dir/queue.db"], "folder"),
    (["produce", "mixed", "--queue", "missing/dir/queue.db"], "does not exist"),
    (["produce", "mixed", "--queue", "."], "is a folder"),
])
def test_one_line_errors(cli, args, message):
    result = cli.run(*args)
    assert_one_line_error(result)
    assert message in result.stderr
    assert not cli.queue.exists()


def test_app_whose_import_fails(cli):
    (cli.folder / "brokenapp.py").write_text("raise RuntimeError('boom\\nsecond line')\n")
    result = cli.run("consume", "--app", "brokenapp:huey")
    assert_one_line_error(result)
    assert "cannot import brokenapp: RuntimeError: boom" in result.stderr


def test_queue_under_a_file_is_unwritable(cli):
    (cli.folder / "afile").write_text("x")
    for command in (["produce", "mixed"], ["consume"]):
        result = cli.run(*command, "--queue", "afile/queue.db")
        assert_one_line_error(result)
        assert "afile" in result.stderr


@pytest.mark.parametrize("command", [["produce", "mixed"], ["consume"], ["status"],
                                     ["produce", "load", "--count", "5"]])
def test_queue_file_that_is_not_sqlite_is_left_alone(cli, command):
    cli.queue.write_bytes(NOT_SQLITE)
    result = cli.run(*command)
    assert_one_line_error(result)
    assert "is not a SQLite database" in result.stderr
    assert cli.queue.read_bytes() == NOT_SQLITE
    assert sorted(p.name for p in cli.folder.iterdir()) == ["queue.db"]


def test_event_store_that_is_not_ours_is_left_alone(cli):
    foreign = cli.folder / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("create table invoices (total real)")
    conn.commit()
    conn.close()
    digest = hashlib.sha256(foreign.read_bytes()).hexdigest()
    result = cli.run("consume", "--events", str(foreign))
    assert_one_line_error(result)
    assert "not a hueyscope event store" in result.stderr
    assert hashlib.sha256(foreign.read_bytes()).hexdigest() == digest


def test_demo_refuses_a_folder_it_did_not_make(cli):
    precious = cli.folder / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    result = cli.run("demo", "--dir", str(precious))
    assert_one_line_error(result)
    assert "not a hueyscope demo folder" in result.stderr
    assert (precious / "thesis.txt").read_text() == "years of work"


# Every option with a constrained value (a choice, a range, a duration, a
# path, a URL) reports a bad value as one line, on every command; the
# environment variable behind an option too.
BAD_VALUES = [
    (["demo", "--dir", "afile"], "'afile' is a file"),
    (["produce", "mixed", "--durability", "fast"], "'fast' is not one of 'full', 'normal'"),
    (["consume", "--durability", "fast"], "'fast' is not one of 'full', 'normal'"),
    (["recover", "--durability", "fast"], "'fast' is not one of 'full', 'normal'"),
    (["produce", "mixed", {"HUEYSCOPE_DURABILITY": "fast"}], "HUEYSCOPE_DURABILITY"),
    (["consume", {"HUEYSCOPE_NO_ARGS": "maybe"}], "HUEYSCOPE_NO_ARGS"),
    (["consume", {"HUEYSCOPE_MAX_ARG_CHARS": "lots"}], "'lots' is not a whole number"),
    (["consume", "--retention", "3x"], "'3x' is not a duration"),
    (["consume", "--heartbeat-every", "0"], "--heartbeat-every"),
    (["consume", "--report-every", "soon"], "'--report-every': 'soon' is not a number"),
    (["report", "--datasette-url", "ftp://x"], "must be an http:// or https:// URL"),
    (["browse", "--port", "-5"], "-5 is not in the range 0<=x<=65535"),
    (["browse", "--port", "70000"], "70000 is not in the range"),
    (["prune", "--older-than", "3x"], "'3x' is not a duration"),
    (["prune", "--older-than", "0d"], "more than zero"),
    (["bench", "--tasks", "-1"], "-1 is not in the range x>=1"),
    (["bench", "--workers", "x"], "'x' is not a whole number"),
    (["bench", "--worker-type", "fiber"], "'fiber' is not one of 'thread', 'process'"),
    (["bench", "--durability", "fast"], "'fast' is not one of 'full', 'normal'"),
    (["bench", "--rounds", "0"], "0 is not in the range x>=1"),
    (["bench", "--writer-events", "-3"], "-3 is not in the range x>=0"),
]


@pytest.mark.parametrize("args,message", BAD_VALUES,
                         ids=[" ".join(a for a in args if isinstance(a, str))
                              for args, _ in BAD_VALUES])
def test_bad_option_values_are_one_line(cli, args, message):
    from hueyscope.events.schema import open_event_store

    # A real event store and a plain file, so that only the bad value is wrong.
    open_event_store(str(cli.events)).close()
    (cli.folder / "afile").write_text("x")
    before = {p.name: p.stat().st_mtime_ns for p in cli.folder.iterdir()}
    env = {}
    if isinstance(args[-1], dict):
        *args, env = args
    result = cli.run(*args, **env)
    assert_one_line_error(result)
    assert message in result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in cli.folder.iterdir()} == before


# -- files that are not a queue ---------------------------------------------

def _foreign_db(path):
    conn = sqlite3.connect(path)
    conn.execute("create table users (id integer primary key, name text)")
    conn.execute("insert into users (name) values ('ada')")
    conn.commit()
    conn.close()


def _newer_lease_schema(cli):
    assert cli.run("produce", "mixed").returncode == 0
    conn = sqlite3.connect(cli.queue)
    conn.execute("update hueyscope_meta set value = 99 where key = 'lease_schema'")
    conn.commit()
    conn.execute("pragma wal_checkpoint(truncate)")
    conn.close()
    return cli.queue


def _event_store(cli):
    assert cli.run("produce", "mixed").returncode == 0
    return cli.events


@pytest.mark.parametrize("command", [
    ["produce", "mixed"], ["consume"], ["recover"], ["recover", "--dry-run"],
    ["consume", "--delivery", "at-most-once"],
])
@pytest.mark.parametrize("make,message", [
    (lambda cli: _foreign_db(cli.folder / "app.db") or cli.folder / "app.db",
     "is a SQLite database, not a huey queue (it has table users); left unchanged"),
    (_event_store, "is an event store, not a huey queue"),
    (_newer_lease_schema, "has lease schema 99, newer than this hueyscope"),
])
def test_a_file_that_is_not_a_queue_is_refused_and_left_unchanged(
        cli, command, make, message):
    path = make(cli)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    files = sorted(p.name for p in cli.folder.iterdir())
    result = cli.run(*command, "--queue", str(path), timeout=30)
    assert_one_line_error(result)
    assert message in result.stderr
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in cli.folder.iterdir()) == files


@pytest.mark.parametrize("command", [["produce", "mixed"], ["consume"], ["recover"]])
def test_the_queue_and_the_event_store_must_be_two_files(cli, command):
    result = cli.run(*command, "--queue", "one.db", "--events", "one.db")
    assert_one_line_error(result)
    assert "the queue and the event store must be two files" in result.stderr
    assert list(cli.folder.iterdir()) == []


def test_status_refuses_an_event_store_given_as_the_queue(cli):
    path = _event_store(cli)
    _checkpointed(cli.folder)
    before = _snapshot(cli.folder)
    for args in (["status"], ["status", "--json"]):
        result = cli.run(*args, "--queue", str(path))
        assert_one_line_error(result)
        assert "is an event store, not a huey queue" in result.stderr
        assert _snapshot(cli.folder) == before


# -- what a file holds is told by the file: nothing written on refusal -------

def _snapshot(folder):
    """{name: sha256} of every file in ``folder``, -wal and -shm files too;
    a folder (a report's site, say) by its name."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file()
            else "folder" for p in sorted(folder.iterdir())}


def _checkpointed(folder):
    """Fold each database's WAL into it, so that no -wal or -shm is left:
    any that appears later was made by the command under test."""
    for path in folder.glob("*.db"):
        conn = sqlite3.connect(path)
        conn.execute("pragma wal_checkpoint(truncate)")
        conn.close()
    assert not list(folder.glob("*-wal")) + list(folder.glob("*-shm"))


def _store_from_a_newer_hueyscope(cli):
    assert cli.run("produce", "mixed").returncode == 0
    conn = sqlite3.connect(cli.events)
    conn.execute("insert into _sqlite_migrations (migration_set, name, applied_at) "
                  "values ('hueyscope', 'm099_from_the_future', '2099-01-01')")
    conn.commit()
    conn.close()
    _checkpointed(cli.folder)


@pytest.mark.parametrize("command", [
    ["report"], ["report", "events.db"], ["browse"], ["browse", "events.db"],
    ["prune", "--older-than", "1d"], ["consume"], ["produce", "mixed"],
    ["recover"],
])
def test_an_event_store_of_a_newer_hueyscope_is_refused_by_every_command(
        cli, command):
    _store_from_a_newer_hueyscope(cli)
    before = _snapshot(cli.folder)
    result = cli.run(*command, timeout=30)
    assert_one_line_error(result)
    assert ("was written by a newer hueyscope (migration m099_from_the_future "
            "is unknown to this version): upgrade hueyscope; left unchanged"
            in result.stderr)
    assert _snapshot(cli.folder) == before


# A module that builds its Huey at import time creates the queue file then
# and there, before its attribute is found missing or not a Huey.
APP_MODULES = {
    "hueyscope_app": "from hueyscope import SqliteHuey\n"
                     "huey = SqliteHuey('app', filename='queue.db')\n"
                     "nohuey = 42\n",
    "stock_app": "from huey import SqliteHuey\n"
                 "huey = SqliteHuey('app', filename='queue.db')\n",
}


@pytest.mark.parametrize("command", [["consume"], ["recover"],
                                     ["recover", "--dry-run"]])
@pytest.mark.parametrize("app,message", [
    ("hueyscope_app:nohuey", "hueyscope_app:nohuey is an int, not a Huey instance"),
    ("hueyscope_app:missing", "module hueyscope_app has no attribute missing"),
    ("./hueyscope_app.py:missing", "module ./hueyscope_app.py has no attribute missing"),
    ("stock_app:huey.storage", "stock_app:huey.storage is a SqliteStorage, not a Huey"),
    ("hueyscope.demo_tasks:nohuey",
     "module hueyscope.demo_tasks has no attribute nohuey"),
    ("hueyscope.demo_tasks:SYNC_LOCK",
     "hueyscope.demo_tasks:SYNC_LOCK is a str, not a Huey instance"),
])
def test_an_app_that_is_not_a_huey_leaves_no_file_behind(cli, command, app, message):
    for name, source in APP_MODULES.items():
        (cli.folder / ("%s.py" % name)).write_text(source)
    before = _snapshot(cli.folder)
    result = cli.run(*command, "--app", app, timeout=30)
    assert_one_line_error(result)
    assert message in result.stderr
    assert _snapshot(cli.folder) == before


def test_an_app_given_as_a_file_path_is_loaded(cli):
    folder = cli.folder / "project"
    folder.mkdir()
    (folder / "tasks.py").write_text(
        "import os\nfrom hueyscope import SqliteHuey\n"
        "huey = SqliteHuey('files', filename=os.environ['HUEYSCOPE_QUEUE'])\n")
    result = cli.run("recover", "--dry-run", "--app", "project/tasks.py:huey")
    assert result.returncode == 0, result.stderr
    assert "dry run: 0 requeued" in result.stdout
    # Imported by its name, as --app tasks:huey would be: the same task names.
    assert cli.queue.exists()


def test_settings_a_command_does_not_use_cannot_fail_it(cli):
    assert cli.run("produce", "mixed").returncode == 0
    unused = {"HUEYSCOPE_DURABILITY": "fast", "HUEYSCOPE_DELIVERY": "maybe",
              "HUEYSCOPE_MAX_ARG_CHARS": "lots"}
    for command in (["status"], ["report"], ["prune", "--older-than", "30d"]):
        result = cli.run(*command, **unused)
        assert result.returncode == 0, (command, result.stderr)
