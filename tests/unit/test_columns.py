"""The rows between recorder and writer are named once, after the tables."""
import sqlite3

from hueyscope.events import columns, schema, statements


def _table_columns(conn, table):
    return [row[1] for row in conn.execute("pragma table_info(%s)" % table)]


def test_row_columns_are_the_tables_columns(tmp_path):
    path = str(tmp_path / "events.db")
    schema.open_event_store(path).close()
    conn = sqlite3.connect(path)
    try:
        # Every column of the tables but the events' own id, in any order:
        # the statements name them.
        assert sorted(columns.EVENT.names) == sorted(
            c for c in _table_columns(conn, "events") if c != "id")
        assert sorted(columns.TASK.names) == sorted(
            _table_columns(conn, "tasks"))
    finally:
        conn.close()
    assert schema.EVENT is columns.EVENT and schema.TASK is columns.TASK


def test_positions_follow_the_names():
    for kind in (columns.CAPTURED, columns.SIGNAL, columns.CHAIN_STEP,
                 columns.EVENT, columns.TASK, columns.ROLLUP):
        assert [getattr(kind, name) for name in kind.names] == \
            list(range(len(kind)))
    assert columns.TASK.wait == 18 and columns.EVENT.task_seq == 21


def test_statements_are_built_from_the_columns():
    prefix, values, _ = statements.INSERT_EVENTS
    assert prefix == "insert into events (%s)" % ", ".join(columns.EVENT)
    assert values.count("?") == len(columns.EVENT)
    prefix, values, _ = statements.UPSERT_TASK
    assert prefix == "insert into tasks (%s)" % ", ".join(columns.TASK)
    assert values.count("?") == len(columns.TASK)
