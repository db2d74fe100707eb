"""Guarded connections and the schema check, on in-memory SQLite databases."""
import re
import sqlite3

import pytest

from hueyscope import readonly
from hueyscope.events.schema import check_store, expected_objects, migrations
from hueyscope.readonly import ForeignSchema, QueryStopped

NEVER_ENDING = ("with recursive c(x) as (select 1 union all select x + 1 "
                "from c) select count(*) from c")


def test_a_query_past_its_time_limit_is_stopped_with_a_reason():
    conn = readonly.connect(":memory:", seconds=0.2)
    with pytest.raises(QueryStopped, match="longer than 0.2 s"):
        conn.execute(NEVER_ENDING).fetchall()
    # The next statement gets its own time again.
    assert conn.execute("select 1").fetchall() == [(1,)]


def test_text_is_shown_replaced_and_cut():
    conn = readonly.connect(":memory:")
    assert conn.execute("select cast(x'41ff42' as text)").fetchone() == ("A\ufffdB",)
    long = conn.execute("select printf('%.*c', 70000, 'x')").fetchone()[0]
    kept = readonly.SHOWN_VALUE_BYTES
    assert long.startswith("x" * kept)
    assert long.endswith("…[truncated: %d bytes not shown]" % (70000 - kept))


def test_a_value_over_the_limit_is_not_read():
    uri = "file:big-value?mode=memory&cache=shared"
    writer = sqlite3.connect(uri, uri=True)
    writer.execute("create table t (small, big)")
    writer.execute("insert into t values ('a', zeroblob(?))",
                   (readonly.MAX_VALUE_BYTES + 1,))
    writer.commit()
    try:
        conn = readonly.connect(uri, uri=True)
        assert conn.execute("select small from t").fetchall() == [("a",)]
        with pytest.raises(sqlite3.DataError, match="over 1048576 bytes"):
            conn.execute("select big from t").fetchall()
        conn.close()
    finally:
        writer.close()


def test_a_guarded_connection_denies_fts3_tokenizer_and_load_extension():
    conn = readonly.connect(":memory:")
    for sql in ("select fts3_tokenizer('simple')",
                "select FTS3_TOKENIZER('simple')",
                "select load_extension('x')"):
        with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
            conn.execute(sql)
    assert conn.execute("select lower('A')").fetchone() == ("a",)


def test_no_trigger_may_write_through_a_guarded_connection():
    conn = readonly.connect(":memory:")
    conn.execute("create table t (x)")
    conn.execute("create table log (x)")
    conn.execute("create trigger planted after delete on t begin "
                 "insert into log values (old.x); end")
    conn.execute("insert into t values (1)")  # fires nothing: no trigger on insert
    with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
        conn.execute("delete from t")
    assert conn.execute("select count(*) from log").fetchone() == (0,)


def ours():
    """An in-memory event store made by the real migrations."""
    import sqlite_utils

    db = sqlite_utils.Database(memory=True)
    migrations.apply(db)
    return db.conn


def test_a_store_made_by_the_migrations_is_ours():
    conn = ours()
    check_store(conn, "x.db")
    # A user's own table and index, and SQLite's statistics, are let be.
    conn.execute("create table notes (x)")
    conn.execute("create index notes_x on notes (x)")
    conn.execute("analyze")
    check_store(conn, "x.db")
    assert expected_objects()["tasks"] == "table"


@pytest.mark.parametrize("change, message", [
    ("drop table _sqlite_migrations; create view _sqlite_migrations as "
     "select 1 as migration_set, 2 as name",
     "_sqlite_migrations is a view where a table belongs"),
    ("alter table tasks rename to t2; create view tasks as select * from t2",
     "tasks is a view where a table belongs"),
    ("create trigger planted after delete on events begin select 1; end",
     "has a trigger hueyscope did not create (planted)"),
    ("create view mine as select 1", "has a view hueyscope did not create"),
    ("drop index idx_events_ts; create table idx_events_ts (x)",
     "idx_events_ts is a table where an index belongs"),
    ("alter table runs rename to r2; create virtual table runs using "
     "fts4(host)", "runs is not a plain table"),
    ("alter table queue_samples rename to q2; create table queue_samples "
     "(ts real, queue text generated always as (ts || 'x') virtual)",
     "column queue_samples.queue is computed by the file"),
])
def test_a_store_with_foreign_schema_objects_is_refused(change, message):
    conn = ours()
    conn.executescript(change)
    with pytest.raises(ForeignSchema, match=re.escape(message)) as refused:
        check_store(conn, "x.db")
    assert "event store x.db" in str(refused.value)
    assert "\n" not in str(refused.value)
