"""hueyscope browse: Datasette over event stores, read-only, described.

Canned queries run through Datasette's own client against a store made by
real producer and consumer processes (``recorded_store``) and against a
small store with known contents; ``hueyscope browse`` runs as a real process
queried over HTTP and stopped with real signals; a page is rendered in
headless Chromium.
"""
import asyncio
import os
import re
import shutil
import signal
import sqlite3
import sys
import time
from pathlib import Path

import httpx
import markupsafe
import pytest

from browse_helpers import build_known_store, get, rows
from conftest import assert_one_line_error, query, wait_until
from hueyscope.browse.app import make_datasette
from hueyscope.events.schema import database_names
from hueyscope.browse.metadata import TABLES, display_sql
from hueyscope.events.queries import QUERIES
from hueyscope.events.schema import open_event_store

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def _copy(src, dest):
    """A consistent copy of a live SQLite file (WAL included)."""
    source = sqlite3.connect("file:%s?mode=ro" % src, uri=True)
    target = sqlite3.connect(str(dest))
    source.backup(target)
    source.close()
    target.close()
    return dest


@pytest.fixture(scope="module")
def recorded(recorded_store, tmp_path_factory):
    """A copy of the recorded store (named events.db) and its Datasette."""
    path = _copy(recorded_store, tmp_path_factory.mktemp("browse") / "events.db")
    return path, make_datasette([path])


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    path = build_known_store(tmp_path_factory.mktemp("known") / "known.db",
                             now=time.time())
    return path, make_datasette([path])


def ms(seconds):
    """Seconds as the canned queries show them: milliseconds, rounded by SQLite."""
    if seconds is None:
        return None
    return sqlite3.connect(":memory:").execute(
        "select round(? * 1000, 1)", (seconds,)).fetchone()[0]


def table_counts(path):
    return {t: query(path, "select count(*) from [%s]" % t)[0][0] for t in TABLES}


# -- canned queries on the store of a real consumer run ---------------------

def test_canned_queries_are_the_shared_sql_read_only(recorded):
    path, ds = recorded
    response = get(ds, "/events.json")
    listed = {q["name"]: q for q in response.json()["queries"]}
    assert set(listed) == set(QUERIES)
    for name, query_ in QUERIES.items():
        assert listed[name]["title"] == query_.title
        # The shared SQL, whole; at most inside a select rounding its times.
        assert listed[name]["sql"] == display_sql(name)
        assert query_.sql in listed[name]["sql"]
        assert not listed[name]["write"]
        assert query_.title and len(query_.description) > 30
    page = get(ds, "/events")
    assert page.status_code == 200
    for query_ in QUERIES.values():
        assert str(markupsafe.escape(query_.title)) in page.text


def test_recorded_failures(recorded, recorded_expected):
    _, ds = recorded
    failures = rows(ds, "events", "recent_failures")
    assert [(r["task"], r["attempts"]) for r in failures] == [
        ("flaky_network_call", 4)]
    assert recorded_expected["error_message"] in failures[0]["error"]
    assert failures[0]["fingerprint"]

    groups = rows(ds, "events", "failures_by_fingerprint")
    assert sum(g["errors"] for g in groups) == recorded_expected["signals"]["error"]
    assert {g["tasks"] for g in groups} == {"flaky_network_call"}
    assert failures[0]["fingerprint"] in {g["fingerprint"] for g in groups}
    assert rows(ds, "events", "recent_failures", task="quick_add") == []


def test_recorded_task_history_and_retry_chains(recorded):
    _, ds = recorded
    failed = rows(ds, "events", "recent_failures")[0]["task_id"]
    history = rows(ds, "events", "task_history", task_id=failed)
    assert history[0]["signal"] == "enqueued"
    # huey puts a retried task back on the queue: enqueued or scheduled again
    signals = [r["signal"] for r in history
               if r["signal"] not in ("enqueued", "scheduled")]
    assert signals == ["executing", "error", "retrying"] * 3 + ["executing", "error"]
    assert [r["attempt"] for r in history if r["signal"] == "executing"] == [1, 2, 3, 4]
    assert all(r["duration_ms"] is not None for r in history if r["signal"] == "error")
    assert [r["ts"] for r in history] == sorted(r["ts"] for r in history)

    chains = rows(ds, "events", "retry_chains")
    by_id = {r["task_id"]: r for r in chains}
    assert by_id[failed]["status"] == "failed"
    assert by_id[failed]["attempt_errors"].count("\n") == 3  # 4 failed attempts
    flaky = [r for r in chains if r["task"] == "flaky_network_call"]
    assert sorted((r["attempts"], r["status"]) for r in flaky) == [
        (3, "complete"), (4, "failed")]
    assert all(r["attempts"] > 1 for r in chains)


def test_recorded_latency(recorded, recorded_expected):
    path, ds = recorded
    slowest = rows(ds, "events", "slowest_tasks")
    durations = [r["duration_ms"] for r in slowest]
    assert durations == sorted(durations, reverse=True)
    assert durations[0] == ms(query(path, "select max(duration) from tasks")[0][0])
    assert {r["task"] for r in rows(ds, "events", "slowest_tasks", task="slow_io")} \
        == {"slow_io"}

    percentiles = {r["task"]: r for r in rows(ds, "events", "latency_percentiles")}
    ran = {name: n for name, n in recorded_expected["task_names"].items()}
    ran["slow_io"] -= 1      # revoked, never ran
    ran["quick_add"] -= 1    # expired, never ran
    assert {t: r["finished"] for t, r in percentiles.items()} == ran
    for r in percentiles.values():
        assert r["run_p50_ms"] <= r["run_p95_ms"] <= r["run_p99_ms"]
        assert r["wait_p50_ms"] <= r["wait_p95_ms"] <= r["wait_p99_ms"]
    # slow_io sleeps, quick_add does not
    assert percentiles["slow_io"]["run_p50_ms"] > percentiles["quick_add"]["run_p99_ms"]
    # A since after everything: nothing finished since then.
    assert rows(ds, "events", "latency_percentiles", since="2999-01-01") == []


def test_recorded_throughput(recorded, recorded_expected):
    _, ds = recorded
    signals = recorded_expected["signals"]
    for name in ("throughput_per_hour", "throughput_per_minute"):
        buckets = rows(ds, "events", name)
        assert sum(b["completed"] for b in buckets) == signals["complete"], name
        assert sum(b["errors"] for b in buckets) == signals["error"], name
    hourly = rows(ds, "events", "throughput_per_hour")
    assert sum(b["retried"] for b in hourly) >= recorded_expected["retrying_without_locks"]
    flaky = rows(ds, "events", "throughput_per_minute", task="flaky_network_call")
    assert sum(b["errors"] for b in flaky) == signals["error"]
    assert sum(b["completed"] for b in flaky) == 2


def test_recorded_runs_locks_and_leftovers(recorded, recorded_expected):
    _, ds = recorded
    assert rows(ds, "events", "in_flight_or_lost") == []
    locks = rows(ds, "events", "lock_contention")
    assert [r["task"] for r in locks] == ["locked_sync_job"]
    assert locks[0]["locked"] >= recorded_expected["min_locked"]

    runs = rows(ds, "events", "consumer_runs")
    consumers = [r for r in runs if r["role"] == "consumer"]
    assert len(consumers) == recorded_expected["consumer_runs"]
    assert consumers[0]["stop_reason"] == recorded_expected["consumer_stop_reason"]
    assert consumers[0]["state"] == "stopped"
    assert consumers[0]["heartbeat"] is not None
    assert len(runs) - len(consumers) == recorded_expected["producer_runs"]

    gone = rows(ds, "events", "revoked_and_expired")
    assert sorted((r["task"], r["status"]) for r in gone) == [
        ("quick_add", "expired"), ("slow_io", "revoked")]


# -- exact answers on a store with known contents ---------------------------

def test_known_percentiles_are_nearest_rank(known):
    _, ds = known
    by_task = {r["task"]: r for r in rows(ds, "known", "latency_percentiles")}
    # quick_add: waits 1..10 s and run times 0.1..1.0 s
    assert by_task["quick_add"]["finished"] == 10
    assert [by_task["quick_add"]["wait_p%d_ms" % p] for p in (50, 95, 99)] == [
        5000.0, 10000.0, 10000.0]
    assert [by_task["quick_add"]["run_p%d_ms" % p] for p in (50, 95, 99)] == [
        500.0, 1000.0, 1000.0]
    # revoked and expired tasks never ran: no percentiles for them
    assert "delayed" not in by_task
    since = rows(ds, "known", "latency_percentiles", since="2023-11-14 22:18:00")
    assert {r["task"]: r["finished"] for r in since}["quick_add"] == 5
    assert since == rows(ds, "known", "latency_percentiles", since="1700000280")



def _nearest_rank(values, p):
    """The ceil(p * n)-th smallest value, computed in Python."""
    values = sorted(values)
    return values[max(1, -(-int(round(p * 1000)) * len(values) // 1000)) - 1] \
        if values else None


def test_percentiles_and_slowest_match_python(tmp_path):
    """Ties, a task with run times but no waits, a task filter: exact answers."""
    path = tmp_path / "ranks.db"
    db = open_event_store(str(path))
    rows_ = []
    for i in range(203):  # n not a multiple of 100: p95 and p99 ranks round up
        rows_.append({"task_id": "a%d" % i, "task": "ties", "status": "complete",
                      "started": 1000.0 + i, "finished": 1001.0 + i,
                      "wait": float(i % 7), "duration": (i * 37 % 101) / 10.0})
    for i in range(5):
        rows_.append({"task_id": "b%d" % i, "task": "no_wait", "status": "complete",
                      "started": 2000.0 + i, "finished": 2001.0 + i,
                      "wait": None, "duration": 0.5 + i})
    rows_.append({"task_id": "c0", "task": "never_ran", "status": "revoked"})
    db["tasks"].insert_all(rows_)
    db.conn.commit()
    db.close()
    ds = make_datasette([path])

    by_task = {r["task"]: r for r in rows(ds, "ranks", "latency_percentiles")}
    assert set(by_task) == {"ties", "no_wait"}
    for name, r in by_task.items():
        mine = [t for t in rows_ if t["task"] == name]
        assert r["finished"] == len(mine)
        for p in (50, 95, 99):
            assert r["wait_p%d_ms" % p] == ms(_nearest_rank(
                [t["wait"] for t in mine if t["wait"] is not None], p / 100))
            assert r["run_p%d_ms" % p] == ms(_nearest_rank(
                [t["duration"] for t in mine], p / 100))
    assert by_task["no_wait"]["wait_p50_ms"] is None
    # Since: only what finished at or after it.
    late = rows(ds, "ranks", "latency_percentiles", since="1101")
    assert {r["task"]: r["finished"] for r in late} == {"ties": 103, "no_wait": 5}
    assert late[1]["run_p50_ms"] == ms(_nearest_rank(
        [t["duration"] for t in rows_[100:203]], 0.5))

    everyone = rows(ds, "ranks", "slowest_tasks")
    assert [r["duration_ms"] for r in everyone] == [ms(d) for d in sorted(
        (t["duration"] for t in rows_ if t.get("duration") is not None),
        reverse=True)[:100]]
    for name in ("ties", "no_wait"):
        slowest = rows(ds, "ranks", "slowest_tasks", task=name)
        assert {r["task"] for r in slowest} == {name}
        assert [r["duration_ms"] for r in slowest] == [ms(d) for d in sorted(
            (t["duration"] for t in rows_ if t["task"] == name), reverse=True)[:100]]
    assert rows(ds, "ranks", "slowest_tasks", task="never_ran") == []

def test_known_lost_and_silent_consumers(known):
    _, ds = known
    states = {r["task_id"]: r["state"] for r in rows(ds, "known", "in_flight_or_lost")}
    assert states == {"s-live": "in flight", "s-dead": "lost", "s-stopped": "lost"}
    # A dead run is only lost once its silence exceeds the threshold.
    states = {r["task_id"]: r["state"]
              for r in rows(ds, "known", "in_flight_or_lost", stale=7200)}
    assert states["s-dead"] == "in flight"
    runs = {r["id"]: r["state"] for r in rows(ds, "known", "consumer_runs")}
    assert runs == {"c-live": "running", "c-dead": "silent",
                    "c-stopped": "stopped", "p-1": "stopped"}


def test_known_failures_retries_and_locks(known):
    _, ds = known
    assert [r["task_id"] for r in rows(ds, "known", "recent_failures")] == ["f-3", "f-1"]
    groups = {r["fingerprint"]: r for r in rows(ds, "known", "failures_by_fingerprint")}
    assert {k: (g["errors"], g["task_ids"]) for k, g in groups.items()} == {
        "fp-value": (4, 2), "fp-key": (1, 1)}
    assert rows(ds, "known", "failures_by_fingerprint", since="2023-11-14 22:33") \
        == [dict(groups["fp-key"])]
    chains = {r["task_id"]: r for r in rows(ds, "known", "retry_chains")}
    assert set(chains) == {"f-1", "f-2"}
    assert chains["f-2"]["attempt_errors"] == "1: ValueError: boom 1"
    locks = rows(ds, "known", "lock_contention")
    assert [(r["task"], r["locked"], r["task_ids"]) for r in locks] == [
        ("locked_sync_job", 3, 2)]
    assert {r["status"] for r in rows(ds, "known", "revoked_and_expired")} == {
        "revoked", "expired"}


# -- tables, metadata, settings ----------------------------------------------

def test_tables_described_sorted_faceted(recorded):
    path, ds = recorded
    listing = {t["name"]: t for t in get(ds, "/events.json").json()["tables"]}
    assert listing["_sqlite_migrations"]["hidden"]
    for table in TABLES:
        assert not listing[table]["hidden"]
    for table, meta in TABLES.items():
        data = get(ds, "/events/%s.json?_size=5&_shape=objects" % table).json()
        values = [r[meta["sort_desc"]] for r in data["rows"]]
        assert values == sorted(values, reverse=True, key=lambda v: (v is not None, v))
        assert set(data["facet_results"]) == set(meta["facets"]), table
        assert not data["suggested_facets"]
        page = get(ds, "/events/%s" % table).text
        assert "sorted by %s descending" % meta["sort_desc"] in page, table
        assert meta["description"].split(":")[0] in page
        for column, text in meta["columns"].items():
            assert column in data["columns"] or table == "runs", (table, column)
        for text in list(meta["columns"].values())[:3]:
            assert str(markupsafe.escape(text)) in page, (table, text)
    statuses = get(ds, "/events/tasks.json?_facet=status").json()
    counts = {f["value"]: f["count"] for f in statuses["facet_results"]["status"]["results"]}
    assert counts == {"complete": 15, "failed": 1, "revoked": 1, "expired": 1}
    # times are shown as ISO-8601 UTC
    assert re.search(r'class="hs-time" title="[0-9.]+">20\d\d-\d\d-\d\d ',
                     get(ds, "/events/events").text)
    settings = get(ds, "/-/settings.json").json()
    assert settings["suggest_facets"] is False
    assert settings["facet_time_limit_ms"] > 200
    assert settings["sql_time_limit_ms"] > 1000


@pytest.mark.parametrize("sql", [
    "insert into events (ts, signal) values (1, 'complete')",
    "delete from tasks",
    "update tasks set status = 'complete'",
    "drop table events",
    "create table x (y)",
    "attach database ':memory:' as other",
    "pragma journal_mode = delete",
    "select 1; delete from tasks",
    "with x as (select 1) delete from tasks",
])
def test_sql_editor_cannot_change_the_store(recorded, sql):
    path, ds = recorded
    before = table_counts(path)
    schema = query(path, "select sql from sqlite_master")
    response = get(ds, "/events.json?" + httpx.QueryParams(sql=sql).__str__())
    assert response.status_code in (400, 403), response.text
    assert table_counts(path) == before
    assert query(path, "select sql from sqlite_master") == schema
    # A POST to a canned query is refused (Datasette 0.65 answers a
    # read-only canned query's POST with an error page) and writes nothing.
    post = asyncio.run(ds.client.post("/events/recent_failures", data={"sql": sql}))
    assert post.status_code >= 400
    assert table_counts(path) == before


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sql", [
    "select fts3_tokenizer('simple')",
    "select hex(fts3_tokenizer('porter'))",
    "select fts3_tokenizer('simple', x'0000000000000000')",
    "select * from (select FTS3_TOKENIZER('unicode61'))",
    "select load_extension('/tmp/nope')",
])
def test_sql_editor_refuses_unsafe_functions(known, sql):
    """fts3_tokenizer() leaks a pointer into libsqlite3 (and with two
    arguments installs one); load_extension() loads native code."""
    path, ds = known
    assert not ds.sqlite_extensions
    response = get(ds, "/known.json?" + str(httpx.QueryParams(sql=sql)))
    assert response.status_code == 400, response.text
    assert "not authorized to use function" in response.json()["error"]
    assert response.json()["rows"] == []
    # The next query is answered as usual.
    assert rows(ds, "known", "lock_contention")[0]["locked"] == 3


PAGES = ("/", "/.json", "/-/databases", "/-/databases.json", "/-/metadata",
         "/-/metadata.json", "/-/versions.json", "/-/settings.json",
         "/-/plugins.json", "/-/threads.json", "/-/actor.json", "/known",
         "/known.json", "/known/tasks", "/known/tasks.json",
         "/known/recent_failures.json", "/known.json?sql=select+nope",
         "/known/nope", "/_internal/databases.json")


@pytest.mark.timeout(60)
def test_no_page_shows_where_the_stores_are(known):
    path, ds = known
    listed = get(ds, "/-/databases.json").json()
    assert [(d["name"], d["path"]) for d in listed] == [("known", "known.db")]
    folder = str(path.parent)
    for page in PAGES:
        response = get(ds, page)
        assert folder not in response.text, page
        assert response.status_code in (200, 400, 403, 404), page


@pytest.mark.timeout(60)
def test_only_the_servers_own_host_names_are_answered(known):
    path, ds = known

    def status(host):
        return asyncio.run(ds.client.get("/known.json",
                                         headers={"host": host})).status_code

    for host in ("localhost", "127.0.0.1:8001", "[::1]:8001"):
        assert status(host) == 200, host
    for host in ("attacker.example", "attacker.example:8001", "127.0.0.1.nip.io"):
        assert status(host) == 400, host


# -- several stores, bad input -----------------------------------------------

def test_several_stores_get_unique_names(tmp_path, known):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = shutil.copy(known[0], tmp_path / "a" / "events.db")
    second = shutil.copy(known[0], tmp_path / "b" / "events.db")
    third = shutil.copy(known[0], tmp_path / "events_2.db")
    names = database_names([first, second, third])
    assert names == ["events", "events_2", "events_2_2"]
    ds = make_datasette([first, second, third])
    for name in names:
        assert rows(ds, name, "lock_contention")[0]["locked"] == 3
        assert get(ds, "/%s/tasks" % name).status_code == 200


@pytest.fixture
def bad_inputs(tmp_path):
    plain = tmp_path / "plain.db"
    conn = sqlite3.connect(plain)
    conn.execute("create table notes (body text)")
    conn.commit()
    conn.close()
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 10)
    return {"plain SQLite": plain, "not SQLite": text,
            "missing": tmp_path / "nope.db", "folder": tmp_path}


def test_bad_input_is_one_line_exit_2(cli, bad_inputs):
    snapshots = {k: p.read_bytes() for k, p in bad_inputs.items() if p.is_file()}
    for kind, path in bad_inputs.items():
        result = cli.run("browse", str(path), "--port", "0", timeout=30)
        assert_one_line_error(result)
        assert str(path) in result.stderr or kind == "folder", kind
    for kind, content in snapshots.items():
        assert bad_inputs[kind].read_bytes() == content, kind
    assert not (bad_inputs["folder"] / "nope.db").exists()
    # The configured store (HUEYSCOPE_EVENTS) is the default: missing here.
    assert_one_line_error(cli.run("browse", "--port", "0"))


def test_busy_port_is_one_line_exit_2(cli, known):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = cli.run("browse", str(known[0]), "--port", str(port), timeout=30)
    assert_one_line_error(result)
    assert "cannot listen on 127.0.0.1:%d" % port in result.stderr


# -- the served process --------------------------------------------------------

def _served_url(started):
    match = re.search(r"Serving at (http://\S+/)", started.stdout)
    return match.group(1) if match else None


@pytest.fixture(scope="module")
def served(recorded, tmp_path_factory):
    """``hueyscope browse`` on a copy of the recorded store, as a process."""
    from conftest import cli_env, start_cli

    folder = tmp_path_factory.mktemp("served")
    store = _copy(recorded[0], folder / "events.db")
    started = start_cli(["browse", "--port", "0"], folder,
                        env=cli_env(folder), name="browse")
    try:
        url = wait_until(lambda: _served_url(started) or started.proc.poll(),
                         timeout=30, message="the server to start")
        assert isinstance(url, str), started.describe()
        yield started, url, store
    finally:
        started.kill()


def test_served_over_http_sees_live_writes(served):
    started, url, store = served
    assert url.startswith("http://127.0.0.1:")
    tasks = httpx.get(url + "events/tasks.json?_shape=objects", timeout=10).json()
    assert len(tasks["rows"]) == 18
    failures = httpx.get(url + "events/recent_failures.json?_shape=objects",
                         timeout=10).json()["rows"]
    assert failures[0]["task"] == "flaky_network_call"
    # A write committed to the WAL (not checkpointed) shows up: mutable mode.
    db = open_event_store(str(store), create=False)
    try:
        db.conn.execute("pragma wal_autocheckpoint = 0")
        with db.conn:
            db.conn.execute("insert into events (ts, signal, task, task_id) "
                            "values (?, 'enqueued', 'live_probe', 'probe-1')",
                            (time.time(),))
        assert os.path.getsize(str(store) + "-wal") > 0
        found = httpx.get(url + "events/events.json?task=live_probe&_shape=objects",
                          timeout=10).json()["rows"]
        assert [r["task_id"] for r in found] == ["probe-1"]
    finally:
        db.close()


@pytest.mark.timeout(60)
def test_served_refuses_foreign_hosts_and_unsafe_sql(served):
    started, url, store = served
    port = url.rsplit(":", 1)[1].strip("/")
    refused = httpx.get(url + "events/tasks.json",
                        headers={"Host": "attacker.example"}, timeout=10)
    assert refused.status_code == 400
    assert "task" not in refused.text.split("Host")[0]
    assert httpx.get(url + "events/tasks.json",
                     headers={"Host": "127.0.0.1:%s" % port},
                     timeout=10).status_code == 200
    listed = httpx.get(url + "-/databases.json", timeout=10).json()
    assert [d["path"] for d in listed] == ["events.db"]
    for _ in range(5):
        leak = httpx.get(url + "events.json", params={
            "sql": "select fts3_tokenizer('simple')"}, timeout=10)
        assert leak.status_code == 400
        assert "not authorized" in leak.json()["error"]
    assert started.proc.poll() is None, started.describe()
    assert httpx.get(url + "events.json", timeout=10).status_code == 200


@pytest.mark.timeout(90)
def test_password_env_asks_every_request_for_it(cli, known):
    store = shutil.copy(known[0], cli.folder / "events.db")
    started = cli.start("browse", store, "--port", "0", "--password-env",
                        "BROWSE_PASSWORD", "--allow-host", "tasks.example.org",
                        BROWSE_PASSWORD="correct horse:battery")
    url = wait_until(lambda: _served_url(started) or started.proc.poll(),
                     timeout=30, message="the server to start")
    assert isinstance(url, str), started.describe()
    assert "correct horse" not in started.stdout + started.stderr
    for page in ("", "events/tasks.json", "-/databases.json", "-/static/app.css"):
        response = httpx.get(url + page, timeout=10)
        assert response.status_code == 401, page
        assert response.headers["www-authenticate"].startswith("Basic ")
        assert "task" not in response.text
    assert httpx.get(url + "events/tasks.json", auth=("me", "wrong"),
                     timeout=10).status_code == 401
    ok = httpx.get(url + "events/tasks.json?_shape=objects",
                   auth=("anyone", "correct horse:battery"), timeout=10)
    assert ok.status_code == 200 and len(ok.json()["rows"]) == 21
    assert httpx.get(url + "events.json", auth=("x", "correct horse:battery"),
                     headers={"Host": "tasks.example.org"},
                     timeout=10).status_code == 200
    # The right password for the wrong host is still refused.
    assert httpx.get(url + "events.json", auth=("x", "correct horse:battery"),
                     headers={"Host": "attacker.example"},
                     timeout=10).status_code == 400
    assert started.stop(signal.SIGTERM, timeout=20) == 0, started.describe()


@pytest.mark.timeout(60)
def test_password_env_unset_is_one_line_exit_2(cli, known):
    store = shutil.copy(known[0], cli.folder / "events.db")
    result = cli.run("browse", store, "--port", "0", "--password-env",
                     "NO_SUCH_VARIABLE_HERE", timeout=30)
    assert_one_line_error(result)
    assert "NO_SUCH_VARIABLE_HERE" in result.stderr


def test_browse_stops_on_sigterm(served):
    started, url, _ = served
    code = started.stop(signal.SIGTERM, timeout=20)
    assert code == 0, started.describe()
    assert "Stopped (SIGTERM)" in started.stderr
    assert "Traceback" not in started.stderr
    with pytest.raises(httpx.TransportError):
        httpx.get(url, timeout=2)


def test_public_host_warns_opens_browser_stops_on_sigint(cli, known):
    store = shutil.copy(known[0], cli.folder / "events.db")
    opened = cli.folder / "opened.txt"
    # webbrowser runs $BROWSER with the URL: a stand-in browser that notes it.
    browser = "%s -c \"import sys; open('%s', 'w').write(sys.argv[1])\" %%s" % (
        sys.executable, opened)
    started = cli.start("browse", store, "--host", "0.0.0.0", "--port", "0",
                        "--open", BROWSER=browser)
    url = wait_until(lambda: _served_url(started) or started.proc.poll(),
                     timeout=30, message="the server to start")
    assert isinstance(url, str), started.describe()
    assert "--password-env" in started.stderr
    assert "task arguments" in started.stderr
    assert httpx.get(url + "events.json", timeout=10).status_code == 200
    wait_until(lambda: opened.exists() and opened.read_text(), timeout=20,
               message="the browser to be opened")
    assert opened.read_text() == url + "events"
    assert started.stop(signal.SIGINT, timeout=20) == 0, started.describe()
    assert "Stopped (SIGINT)" in started.stderr


# -- a real browser ---------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"


def test_tasks_page_in_chromium(recorded):
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("chromium missing at %s" % CHROMIUM)
        pytest.skip("chromium not installed")
    from playwright.sync_api import sync_playwright

    from conftest import cli_env, start_cli

    folder = recorded[0].parent
    started = start_cli(["browse", str(recorded[0]), "--port", "0"], folder,
                        env=cli_env(folder), name="browse-chromium")
    try:
        url = wait_until(lambda: _served_url(started) or started.proc.poll(),
                         timeout=30, message="the server to start")
        assert isinstance(url, str), started.describe()
        ARTIFACTS.mkdir(exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-sync"])
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                errors = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(url + "events/tasks", wait_until="load")
                page.screenshot(path=str(ARTIFACTS / "browse-tasks.png"))
                assert page.locator("h1").inner_text().strip() == "tasks"
                body = page.locator("body").inner_text()
                assert "One row per task id" in body
                assert "18 rows" in body
                assert "sorted by enqueued descending" in body
                facet = page.locator(".facet-info[data-column=status]")
                assert facet.is_visible()
                assert "complete" in facet.inner_text()
                assert page.locator(".hs-time").first.is_visible()
                assert re.match(r"20\d\d-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z",
                                page.locator(".hs-time").first.inner_text())
                page.goto(url + "events/latency_percentiles", wait_until="load")
                page.screenshot(path=str(ARTIFACTS / "browse-percentiles.png"),
                                full_page=True)
                assert "Queue wait and run time percentiles per task" in \
                    page.locator("h1").inner_text()
                assert page.locator("table.rows-and-columns tbody tr").count() == 8
                assert errors == []
            finally:
                browser.close()
    finally:
        started.stop(signal.SIGTERM, timeout=20)
        started.kill()


def test_canned_queries_show_run_times_and_waits_in_milliseconds(tmp_path):
    """A float such as 0.024796724319458008 s reads 24.8 ms, in every query
    that shows a run time or a wait; the report's SQL keeps exact seconds."""
    path = tmp_path / "ms.db"
    db = open_event_store(str(path))
    db["tasks"].insert({"task_id": "t1", "task": "work", "status": "complete",
                        "enqueued": 1000.0, "ready": 1000.0, "started": 1000.5,
                        "finished": 1000.524796724319458008, "attempts": 2,
                        "wait": 0.5000123456, "duration": 0.024796724319458008,
                        "seq": 1})
    db["events"].insert({"ts": 1000.5248, "signal": "complete", "task_id": "t1",
                         "task": "work", "attempt": 2, "task_seq": 1,
                         "duration": 0.024796724319458008})
    db.conn.commit()
    db.close()
    ds = make_datasette([path])
    shown = {
        "slowest_tasks": rows(ds, "ms", "slowest_tasks")[0],
        "task_history": rows(ds, "ms", "task_history", task_id="t1")[0],
        "latency_percentiles": rows(ds, "ms", "latency_percentiles")[0],
        "retry_chains": rows(ds, "ms", "retry_chains")[0],
    }
    assert shown["slowest_tasks"]["duration_ms"] == 24.8
    assert shown["slowest_tasks"]["wait_ms"] == 500.0
    assert shown["task_history"]["duration_ms"] == 24.8
    assert shown["latency_percentiles"]["run_p99_ms"] == 24.8
    assert shown["latency_percentiles"]["wait_p50_ms"] == 500.0
    assert shown["retry_chains"]["total_seconds"] == 0.525
    for name, row in shown.items():
        # No float with more digits than it means, in any column.
        for column, value in row.items():
            if isinstance(value, float) and column not in (
                    "ts", "enqueued", "finished", "started", "eta"):
                assert len(repr(value).split(".")[1]) <= 3, (name, column, value)
    # The columns keep their places, and the report's SQL its seconds.
    conn = sqlite3.connect(path)
    raw = conn.execute(QUERIES["slowest_tasks"].sql, {"task": ""}).fetchone()
    conn.close()
    assert raw[3] == 0.024796724319458008
    assert list(shown["slowest_tasks"])[3] == "duration_ms"
