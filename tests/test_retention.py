"""Retention: ``hueyscope prune`` and :func:`prune_store` on real event stores."""
import shutil
import sqlite3
import time

import pytest
import sqlite_utils

from conftest import assert_one_line_error, query, scalar
from hueyscope.events.retention import prune_store
from hueyscope.settings import parse_duration
from synthetic import build_synthetic

DAY = 86400.0
ACTIVE = ("waiting", "enqueued", "scheduled", "executing", "retrying")


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory):
    """Ten days of synthetic history ending now, plus old tasks that may
    still run (which prune must keep)."""
    path = tmp_path_factory.mktemp("retention") / "events.db"
    now = time.time()
    build_synthetic(path, events=20_000, days=10, end=now)
    db = sqlite_utils.Database(path)
    old = now - 9 * DAY
    for status in ACTIVE:
        db["tasks"].insert({"task_id": "old-%s" % status, "task": "quick_add",
                            "status": status, "enqueued": old, "updated": old,
                            # a retrying task keeps the finish time of its
                            # failed attempt
                            "finished": old if status == "retrying" else None})
    db.close()
    return path, now


@pytest.fixture
def store(synthetic_store, tmp_path):
    source, now = synthetic_store
    path = tmp_path / "events.db"
    shutil.copy(source, path)
    return path, now


def snapshot(path, cutoff):
    """What prune must keep or delete, read before it runs."""
    q = lambda sql, *p: scalar(path, sql, p)  # noqa: E731
    return {
        "events_old": q("select count(*) from events where ts < ?", cutoff),
        "events_new": q("select count(*) from events where ts >= ?", cutoff),
        "tasks_old": q("select count(*) from tasks where finished < ? and "
                       "status not in (%s)" % ",".join("?" * len(ACTIVE)),
                       cutoff, *ACTIVE),
        "tasks": q("select count(*) from tasks"),
        "samples_old": q("select count(*) from queue_samples where ts < ?", cutoff),
        "samples": q("select count(*) from queue_samples"),
        "rollup": query(path, "select count(*), sum(count), sum(duration_sum), "
                        "max(duration_max), sum(wait_sum) from rollup_hourly")[0],
        "runs": query(path, "select * from runs order by id"),
    }


def test_prune_store_deletes_old_rows_and_keeps_rollups_and_runs(store):
    path, now = store
    cutoff = now - 5 * DAY
    before = snapshot(path, cutoff)
    assert before["events_old"] > 1000 and before["events_new"] > 1000
    assert before["tasks_old"] > 100 and before["samples_old"] > 100

    outcome = prune_store(str(path), 5 * DAY, now=now)

    assert outcome == {"cutoff": cutoff, "vacuumed": False,
                       "events": before["events_old"],
                       "tasks": before["tasks_old"],
                       "queue_samples": before["samples_old"]}
    after = snapshot(path, cutoff)
    assert after["events_old"] == 0 and after["samples_old"] == 0
    assert after["tasks_old"] == 0
    assert after["events_new"] == before["events_new"]
    assert after["tasks"] == before["tasks"] - before["tasks_old"]
    # Totals survive: roll-ups and runs untouched.
    assert after["rollup"] == before["rollup"]
    assert after["runs"] == before["runs"]
    # Tasks that may still run are kept however old.
    kept = dict(query(path, "select status, task_id from tasks where "
                      "task_id like 'old-%'"))
    assert sorted(kept) == sorted(ACTIVE)
    assert scalar(path, "pragma integrity_check") == "ok"
    # A second run finds nothing more.
    again = prune_store(str(path), 5 * DAY, now=now)
    assert (again["events"], again["tasks"], again["queue_samples"]) == (0, 0, 0)


def test_prune_store_works_in_chunks_on_an_open_connection(store):
    """Each chunk is its own short transaction: a consumer writing the store
    meanwhile waits for one chunk at most, never the whole prune."""
    path, now = store
    before = snapshot(path, now - 5 * DAY)
    statements = []
    conn = sqlite3.connect(path, isolation_level=None)
    conn.set_trace_callback(statements.append)
    outcome = prune_store(conn, 5 * DAY, now=now, chunk=500)
    conn.set_trace_callback(None)
    assert outcome["events"] == before["events_old"]
    begins = [s for s in statements if s.lower().startswith("begin")]
    commits = [s for s in statements if s.lower() == "commit"]
    deleted = before["events_old"] + before["tasks_old"] + before["samples_old"]
    assert len(begins) == len(commits) >= deleted // 500
    assert not conn.in_transaction
    conn.close()
    # The same through a sqlite_utils Database, as a consumer would call it.
    db = sqlite_utils.Database(path)
    assert prune_store(db, 1 * DAY, now=now)["events"] > 0
    db.close()


def test_prune_command_prints_what_it_deleted_and_vacuums(store, cli):
    path, now = store
    size = path.stat().st_size
    rollup = snapshot(path, 0)["rollup"]
    events = scalar(path, "select count(*) from events")
    result = cli.run("prune", "--older-than", "7d", "--vacuum", "--events", path)
    assert result.returncode == 0, result.stderr
    left = scalar(path, "select count(*) from events")
    assert 0 < left < events
    assert scalar(path, "select min(ts) from events") >= now - 7 * DAY - 60
    lines = result.stdout.splitlines()
    assert lines[0].startswith("pruned %s: deleted %d events, " % (path, events - left))
    assert "kept roll-ups and runs" in lines[0]
    assert lines[1].startswith("vacuumed: ")
    assert path.stat().st_size < size * 0.8
    assert snapshot(path, 0)["rollup"] == rollup
    assert scalar(path, "pragma integrity_check") == "ok"


@pytest.mark.parametrize("text,seconds", [
    ("90s", 90), ("15m", 900), ("12h", 43200), ("30d", 30 * DAY),
    ("2w", 14 * DAY), ("1.5h", 5400), ("3D", 3 * DAY),
])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("value", ["30", "5x", "0s", "-3d", "d", "", "1e3s",
                                   "3 days"])
def test_prune_refuses_a_bad_duration(store, cli, value):
    path, _ = store
    data = path.read_bytes()
    result = cli.run("prune", "--older-than", value, "--events", path)
    assert_one_line_error(result)
    assert "--older-than" in result.stderr
    assert path.read_bytes() == data


def test_prune_refuses_what_is_not_an_event_store(cli, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    foreign = tmp_path / "foreign.db"
    sqlite_utils.Database(foreign)["people"].insert({"name": "ada"})
    folder = tmp_path / "folder.db"
    folder.mkdir()
    missing = tmp_path / "missing.db"
    for target in (text, foreign, folder, missing):
        data = target.read_bytes() if target.is_file() else None
        result = cli.run("prune", "--older-than", "30d", "--events", target)
        assert_one_line_error(result)
        assert str(target) in result.stderr
        if data is not None:
            assert target.read_bytes() == data
    assert not missing.exists()
    with pytest.raises(ValueError):
        prune_store(str(foreign), DAY)
    with pytest.raises(ValueError):
        prune_store(str(tmp_path / "missing.db"), 0)
