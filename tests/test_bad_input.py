"""Bad input: one ``Error:`` line, exit code 2, no traceback, no file touched."""
import hashlib
import sqlite3

import pytest

from conftest import assert_one_line_error

NOT_SQLITE = b"id,name\n1,not a database\n"


@pytest.mark.parametrize("args,message", [
    (["produce", "nope"], "Invalid value for 'SCENARIO': 'nope' is not one of"),
    (["produce", "load", "--count", "-1"], "-1 is not in the range x>=0"),
    (["produce", "load", "--count", "ten"], "'ten' is not a valid integer"),
    (["produce", "mixed", "--timeout", "-5"], "--timeout"),
    (["produce", "mixed", "--app", "os:path"], "--app does not apply to produce"),
    (["consume", "--workers", "0"], "0 is not in the range x>=1"),
    (["consume", "--workers", "many"], "'many' is not a valid integer"),
    (["consume", "--worker-type", "fiber"], "'fiber' is not one of 'thread', 'process'"),
    (["consume", "--max-delay", "-1"], "--max-delay"),
    (["consume", "--scheduler-interval", "7"], "must be a factor of 60"),
    (["consume", "--app", "no_such_module_xyz:huey"],
     "cannot import no_such_module_xyz: no module named no_such_module_xyz"),
    (["consume", "--app", "os:path"], "os:path is a module, not a Huey instance"),
    (["consume", "--app", "json:dumps"], "json:dumps is a function, not a Huey instance"),
    (["consume", "--app", "os:no_such_attr"], "module os has no attribute no_such_attr"),
    (["consume", "--app", "hueyscope.demo_tasks"], "--app must look like module:attribute"),
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
    (["status", "--durability", "fast"], "'fast' is not one of 'full', 'normal'"),
    (["status", {"HUEYSCOPE_DURABILITY": "fast"}], "HUEYSCOPE_DURABILITY"),
    (["consume", "--retention", "3x"], "'3x' is not a duration"),
    (["consume", "--heartbeat-every", "0"], "--heartbeat-every"),
    (["consume", "--report-every", "soon"], "'soon' is not a valid float"),
    (["report", "--datasette-url", "ftp://x"], "must be an http:// or https:// URL"),
    (["browse", "--port", "-5"], "-5 is not in the range 0<=x<=65535"),
    (["browse", "--port", "70000"], "70000 is not in the range"),
    (["prune", "--older-than", "3x"], "'3x' is not a duration"),
    (["prune", "--older-than", "0d"], "more than zero"),
    (["bench", "--tasks", "-1"], "-1 is not in the range x>=1"),
    (["bench", "--workers", "x"], "'x' is not a valid integer"),
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
