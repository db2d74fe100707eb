"""check_queue_file: what is refused, in one line, and left byte for byte."""
import sqlite3

import pytest

from hueyscope.queue.files import check_queue_file, check_sqlite_file
from hueyscope.queue.tables import LEASE_SCHEMA


def _db(path, *statements):
    conn = sqlite3.connect(path)
    for sql in statements:
        conn.execute(sql)
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize("make", [
    lambda p: None,  # absent
    lambda p: p.write_bytes(b""),  # empty
    lambda p: _db(p, "create table task (id)", "create table kv (k)",
                  "create table hueyscope_lease (id)"),
    lambda p: _db(p, "create table hueyscope_meta (key, value)",
                  "insert into hueyscope_meta values ('lease_schema', %d)" % LEASE_SCHEMA),
])
def test_a_queue_empty_or_absent_file_passes(tmp_path, make):
    path = tmp_path / "queue.db"
    make(path)
    check_queue_file(str(path))
    check_queue_file(":memory:")


@pytest.mark.parametrize("make,message", [
    (lambda p: p.mkdir(), "is a folder, not a SQLite file"),
    (lambda p: p.write_text("hello, not a database\n"), "is not a SQLite database"),
    (lambda p: _db(p, "create table events (x)", "create table runs (x)"),
     "is an event store, not a huey queue (it has tables events, runs); left unchanged"),
    (lambda p: _db(p, "create table task (x)", "create table notes (x)"),
     "is a SQLite database, not a huey queue (it has table notes); left unchanged"),
    (lambda p: _db(p, "create table hueyscope_meta (key, value)",
                   "insert into hueyscope_meta values ('lease_schema', %d)"
                   % (LEASE_SCHEMA + 1)),
     "has lease schema %d, newer than this hueyscope (%d): upgrade hueyscope; "
     "left unchanged" % (LEASE_SCHEMA + 1, LEASE_SCHEMA)),
])
def test_refusals_are_one_line_and_leave_the_file_as_it_was(tmp_path, make, message):
    path = tmp_path / "queue.db"
    make(path)
    before = sorted(p.name for p in tmp_path.iterdir())
    content = path.read_bytes() if path.is_file() else None
    with pytest.raises(ValueError) as info:
        check_queue_file(str(path))
    assert message in str(info.value) and "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no -wal, no -shm
    if content is not None:
        assert path.read_bytes() == content


def test_check_sqlite_file_reads_the_header_only(tmp_path):
    path = tmp_path / "x.db"
    path.write_bytes(b"SQLite format 3\x00" + b"\x00" * 10)
    check_sqlite_file(str(path))  # a header is enough: nothing else is read
    path.write_bytes(b"SQLite format 2\x00")
    with pytest.raises(ValueError, match="is not a SQLite database"):
        check_sqlite_file(str(path))
    check_sqlite_file(str(tmp_path / "absent.db"))
