"""The static report, built from real event stores and read back as HTML.

The main store is ``recorded_store`` (real produce + consume processes); the
numbers on the pages are checked against SQL on that store. Synthetic stores
(tests/synthetic.py) add scale, runs that were killed and merging.
"""
import re
import sqlite3
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import sqlite_utils
from datasette.utils import tilde_encode

from conftest import assert_one_line_error, run_cli, cli_env
from synthetic import build_synthetic
from hueyscope.reports.builder import MARKER, build_report, slug
from report_helpers import (as_int, chart_specs, copy_store, pages, parse,
                            rows, stretch_store, table_with, trim_store)

DATASETTE = "http://datasette.test:8001"


@pytest.fixture(scope="module")
def recorded_site(recorded_store, tmp_path_factory):
    """The report of the recorded store, built by the real command line."""
    folder = tmp_path_factory.mktemp("recorded-site")
    site = folder / "site"
    result = run_cli(["report", str(recorded_store), "--out", str(site)],
                     folder, env=cli_env(folder))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(site / "index.html")
    return site


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("synthetic") / "synth.db"
    build_synthetic(path, events=20_000, seed=7, days=3)
    return path


def status_counts(store):
    return dict(rows(store, "select status, count(*) from tasks group by 1"))


def test_index_totals_match_the_store(recorded_store, recorded_site, recorded_expected):
    index = parse(recorded_site / "index.html")
    statuses = status_counts(recorded_store)
    assert statuses == recorded_expected["status"]  # the run we report on
    stats = {k: as_int(v) for k, v in index.stats.items()}
    assert stats["Tasks"] == sum(statuses.values())
    assert stats["Completed"] == statuses.get("complete", 0)
    assert stats["Failed"] == statuses.get("failed", 0)
    assert stats["Revoked"] == statuses.get("revoked", 0)
    assert stats["Expired"] == statuses.get("expired", 0)
    assert stats["Retried"] == rows(
        recorded_store, "select count(*) from tasks where attempts > 1")[0][0]
    assert stats["Lost"] == 0  # graceful stop: nothing left executing
    # Locked: each execution that found the lock held, although every
    # locked job retried and completed.
    assert stats["Locked"] == rows(recorded_store, "select count(*) from events "
                                   "where signal = 'locked'")[0][0] >= 1
    page = parse(recorded_site / "tasks" / ("%s.html" % slug("locked_sync_job")))
    assert as_int(page.stats["Locked"]) == stats["Locked"]
    # The period covered is the first and last event, ISO-8601 UTC.
    first, last, n = rows(recorded_store,
                          "select min(ts), max(ts), count(*) from events")[0]
    text = (recorded_site / "index.html").read_text()
    assert '<time datetime="%s">' % iso(first) in text
    assert '<time datetime="%s">' % iso(last) in text
    assert "{:,} events".format(n) in text


def iso(ts):
    import datetime
    return datetime.datetime.fromtimestamp(
        ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_tasks_table_and_task_pages(recorded_store, recorded_site):
    index = parse(recorded_site / "index.html")
    listed = {row["Task"]: row for row in table_with(index, "Run p50")}
    names = dict(rows(recorded_store, "select task, count(*) from tasks group by 1"))
    assert set(listed) == set(names)
    for name, total in names.items():
        assert as_int(listed[name]["Tasks"]) == total
        page_path = recorded_site / "tasks" / ("%s.html" % slug(name))
        page = parse(page_path)
        stats = {k: as_int(v) for k, v in page.stats.items()}
        by_status = dict(rows(recorded_store, "select status, count(*) from tasks "
                              "where task = ? group by 1", (name,)))
        assert stats["Tasks"] == total
        assert stats["Completed"] == by_status.get("complete", 0)
        assert stats["Failed"] == by_status.get("failed", 0)
        # Attempts distribution equals the tasks table's.
        attempts = dict(rows(recorded_store, "select attempts, count(*) from tasks "
                             "where task = ? and attempts > 0 group by 1", (name,)))
        shown = {as_int(r["Attempts"]): as_int(r["Tasks"])
                 for r in table_with(page, "Share")}
        assert shown == attempts, name
        # Every task that ran shows a run time histogram of its run times.
        if any(attempts):
            histogram = chart_specs(page_path)["histogram"]
            finished = rows(recorded_store, "select count(*) from tasks where "
                            "task = ? and duration is not null", (name,))[0][0]
            assert sum(histogram["series"][0]["values"]) == finished


def test_flaky_attempts_and_retry_chains(recorded_store, recorded_site):
    retried = rows(recorded_store, "select task_id, status, attempts from tasks "
                   "where attempts > 1 order by finished desc")
    assert retried, "the recorded run retries flaky calls"
    page = parse(recorded_site / "retries.html")
    stats = {k: as_int(v) for k, v in page.stats.items()}
    assert stats["Retried tasks"] == len(retried)
    assert stats["Then completed"] == sum(1 for r in retried if r[1] == "complete")
    text = (recorded_site / "retries.html").read_text()
    # Each chain lists one row per execution, with its outcome.
    for task_id, status, attempts in retried:
        assert task_id[:8] in text
    executions = rows(recorded_store, "select count(*) from events e join tasks t "
                      "on t.task_id = e.task_id where t.attempts > 1 "
                      "and e.signal = 'executing'")[0][0]
    chain_rows = [r for t in page.tables for r in t[1:]
                  if len(t[0]) == 6 and t[0][0] == "#"]
    assert len(chain_rows) == executions
    assert "transient failure" in text


def test_failures_grouped_by_fingerprint(recorded_store, recorded_site):
    page = parse(recorded_site / "failures.html")
    groups = rows(recorded_store, "select error_type, count(*), min(ts), max(ts) "
                  "from events where signal = 'error' group by fingerprint")
    shown = table_with(page, "Final failures")
    assert len(shown) == len(groups)
    assert sorted(as_int(r["Errors"]) for r in shown) == sorted(g[1] for g in groups)
    text = (recorded_site / "failures.html").read_text()
    assert "Traceback (most recent call last)" in text
    for _, _, first, last in groups:
        assert iso(first) in text and iso(last) in text


def test_runs_pipelines_schedules_locks(recorded_store, recorded_site, recorded_expected):
    runs = rows(recorded_store, "select id, role, stop_reason, pid from runs")
    listing = table_with(parse(recorded_site / "runs.html"), "Last heartbeat")
    assert len(listing) == len(runs)
    consumer = [r for r in runs if r[1] == "consumer"]
    assert len(consumer) == recorded_expected["consumer_runs"]
    run_page = recorded_site / "runs" / ("%s.html" % slug(consumer[0][0]))
    page = parse(run_page)
    processed = table_with(page, "Completed")
    executed = rows(recorded_store, "select count(*) from tasks where run_id = ?",
                    (consumer[0][0],))[0][0]
    assert sum(as_int(r["Tasks"]) for r in processed) == executed
    html = run_page.read_text()
    assert recorded_expected["consumer_stop_reason"] in html
    assert str(consumer[0][3]) in html

    pipes = (recorded_site / "pipelines.html").read_text()
    chains = rows(recorded_store, "select count(*) from tasks t where parent_id is null "
                  "and exists (select 1 from tasks c where c.parent_id = t.task_id)")[0][0]
    outcomes = table_with(parse(recorded_site / "pipelines.html"), "Outcome")
    assert sum(as_int(r["Chains"]) for r in outcomes) == chains
    assert pipes.count('class="steps"') == min(chains, 25)

    sched = parse(recorded_site / "schedules.html")
    revoked = table_with(sched, "Status")
    gone = rows(recorded_store, "select count(*) from tasks "
                "where status in ('revoked', 'expired')")[0][0]
    assert len([r for r in revoked if r.get("Status") in ("revoked", "expired")]) == gone

    locked = rows(recorded_store, "select count(*) from events where signal = 'locked'")[0][0]
    contention = table_with(parse(recorded_site / "locks.html"), "Locked events")
    assert sum(as_int(r["Locked events"]) for r in contention) == locked >= 1


def test_no_external_urls_and_every_internal_link_resolves(recorded_site):
    checked = 0
    for path in pages(recorded_site):
        page = parse(path)
        for tag, attr, url in page.urls:
            assert not re.match(r"(?i)\s*(https?:)?//", url), (path, url)
            assert not url.lower().startswith(("javascript:", "data:")), (path, url)
            target = urlparse(url)
            if target.path:
                resolved = (path.parent / unquote(target.path)).resolve()
                assert resolved.is_file(), (path, url)
                assert recorded_site.resolve() in resolved.parents
            if target.fragment:
                anchor_page = parse(resolved) if target.path else page
                assert target.fragment in anchor_page.ids, (path, url)
            checked += 1
    assert checked > 100
    for name in ("style.css", "uPlot.min.css"):
        css = (recorded_site / "static" / name).read_text()
        assert "url(" not in css and "@import" not in css
    # Scripts are the vendored uPlot and our charts.js, from the site's own
    # folder (their src is checked above), and JSON data that runs nothing.
    scripts = re.findall(r"<script[^>]*>", "".join(
        p.read_text() for p in pages(recorded_site)))
    assert scripts
    assert set(scripts) <= {
        '<script type="application/json" class="chart-spec">',
        '<script src="static/uPlot.iife.min.js">', '<script src="static/charts.js">',
        '<script src="../static/uPlot.iife.min.js">',
        '<script src="../static/charts.js">'}, set(scripts)
    js = (recorded_site / "static" / "charts.js").read_text()
    assert not re.search(r"fetch\(|XMLHttpRequest|import\(|https?://", js)


def test_datasette_links(recorded_store, tmp_path):
    site = tmp_path / "site"
    build_report([recorded_store], site, datasette_url=DATASETTE + "/")
    db = Path(recorded_store).stem
    task_id, name = rows(recorded_store, "select task_id, task from tasks "
                         "where status = 'failed'")[0]
    external = set()
    for path in pages(site):
        for _, _, url in parse(path).urls:
            if "://" in url:
                assert url.startswith((DATASETTE + "/" + db + "/",
                                       DATASETTE + "/-/hueyscope/task/")), url
                external.add(url)
    assert "%s/%s/task_history?task_id=%s" % (DATASETTE, db, task_id) in external
    assert "%s/-/hueyscope/task/%s" % (DATASETTE, task_id) in external
    assert any(u.startswith("%s/%s/tasks?task=" % (DATASETTE, db)) for u in external)
    assert "%s/%s/recent_failures" % (DATASETTE, db) in external
    run_id = rows(recorded_store, "select id from runs where role = 'consumer'")[0][0]
    assert "%s/%s/runs/%s" % (DATASETTE, db, tilde_encode(run_id)) in external


def test_hostile_text_is_escaped_and_file_names_are_safe(recorded_store, tmp_path):
    store = copy_store(recorded_store, tmp_path / "hostile.db")
    name = '<script>alert("task")</script>/../../evil'
    message = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'
    db = sqlite_utils.Database(store)
    now = rows(store, "select max(ts) from events")[0][0]
    db["tasks"].insert({
        "task_id": "../<b>id</b>", "task": name, "queue": "q", "status": "failed",
        "enqueued": now - 2, "started": now - 1, "finished": now, "attempts": 1,
        "wait": 0.5, "duration": 1.0, "error_type": "<i>Boom</i>",
        "error": message, "fingerprint": "<fp>", "updated": now})
    db["events"].insert({
        "ts": now, "task_id": "../<b>id</b>", "task": name, "signal": "error",
        "attempt": 1, "retries_left": 0, "duration": 1.0,
        "error_type": "<i>Boom</i>", "error": message, "fingerprint": "<fp>",
        "traceback": "Traceback\n" + message, "host": "<h1>host</h1>"})
    db.close()
    site = tmp_path / "site"
    build_report([store], site)
    everything = "".join(p.read_text() for p in pages(site))
    # The only script tags are the report's own (all with attributes).
    assert "<script>" not in everything
    assert all(" src=" in tag or 'type="application/json"' in tag
               for tag in re.findall(r"<script[^>]*>", everything))
    assert "<img" not in everything and "<i>Boom" not in everything
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in everything
    task_pages = sorted(p.name for p in (site / "tasks").iterdir())
    assert all(re.fullmatch(r"[a-z0-9-]+\.html", n) for n in task_pages), task_pages
    hostile_page = site / "tasks" / ("%s.html" % slug(name))
    assert hostile_page.is_file()
    assert "&lt;script&gt;alert(&#34;task&#34;)" in hostile_page.read_text()
    # In a chart's JSON the name is escaped too, and reads back whole.
    assert name in chart_specs(hostile_page)["histogram"]["title"]
    # Nothing was written outside the site.
    assert {p.name for p in tmp_path.iterdir()
            if not p.name.startswith("hostile.db")} == {"site"}


BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"


def test_bidi_controls_are_shown_escaped(recorded_store, tmp_path):
    """``safe\u202egnp.exe`` cannot display as ``safeexe.png``: every bidi
    control in a task name, an error, a traceback or a host shows as its
    escape, in the text, in attributes and in the charts' JSON."""
    store = copy_store(recorded_store, tmp_path / "bidi.db")
    name = "safe\u202egnp.exe"
    message = "cannot open \u2066invoice\u2069 " + BIDI
    db = sqlite_utils.Database(store)
    now = rows(store, "select max(ts) from events")[0][0]
    db["tasks"].insert({
        "task_id": "bidi-1", "task": name, "queue": "q", "status": "failed",
        "enqueued": now - 2, "started": now - 1, "finished": now, "attempts": 1,
        "wait": 0.5, "duration": 1.0, "error_type": "Err\u200f",
        "error": message, "fingerprint": "fp-bidi", "updated": now})
    db["events"].insert({
        "ts": now, "task_id": "bidi-1", "task": name, "signal": "error",
        "attempt": 1, "retries_left": 0, "duration": 1.0,
        "error_type": "Err\u200f", "error": message, "fingerprint": "fp-bidi",
        "traceback": "Traceback\n" + message, "host": "host\u061c"})
    db.close()
    site = tmp_path / "site"
    build_report([store], site)
    texts = {p: p.read_text(encoding="utf-8") for p in pages(site)}
    for page, text in texts.items():
        found = sorted({"U+%04X" % ord(c) for c in text if c in BIDI})
        assert not found, (page.name, found)
    everything = "".join(texts.values())
    assert "safe\\u202egnp.exe" in everything
    assert "cannot open \\u2066invoice\\u2069" in everything
    assert "host\\u061c" in everything
    page = site / "tasks" / ("%s.html" % slug(name))
    assert "safe\\u202egnp.exe" in chart_specs(page)["histogram"]["title"]


def test_synthetic_store_numbers(synthetic_store, tmp_path):
    site = tmp_path / "site"
    seen = []
    build_report([synthetic_store], site, progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1][0] == seen[-1][1]
    stats = {k: as_int(v) for k, v in parse(site / "index.html").stats.items()}
    counts = status_counts(synthetic_store)
    assert stats["Tasks"] == sum(counts.values())
    assert stats["Failed"] == counts["failed"]
    assert stats["Revoked"] == counts["revoked"] > 0
    assert stats["Expired"] == counts["expired"] > 0
    collisions = rows(synthetic_store, "select sum(count) from rollup_hourly "
                      "where signal = 'locked'")[0][0]
    assert stats["Locked"] == collisions >= counts["locked"] > 0
    # The killed consumer left tasks executing: they are lost, and its page says so.
    killed = rows(synthetic_store, "select id from runs where stop_reason = 'killed'")
    assert len(killed) == 1
    stranded = rows(synthetic_store, "select count(*) from tasks where "
                    "status = 'executing' and run_id = ?", killed[0])[0][0]
    assert stranded >= 3 and stats["Lost"] >= stranded
    left = table_with(parse(site / "runs" / ("%s.html" % slug(killed[0][0]))), "State")
    assert len(left) == stranded and {r["State"] for r in left} == {"lost"}
    # Periodic heartbeats are found, pipelines summarised.
    assert "heartbeat" in (site / "schedules.html").read_text()
    assert 'class="steps"' in (site / "pipelines.html").read_text()


def test_several_stores_merge_into_one_report(recorded_store, synthetic_store, tmp_path):
    site = tmp_path / "site"
    build_report([recorded_store, synthetic_store], site)
    stats = {k: as_int(v) for k, v in parse(site / "index.html").stats.items()}
    a, b = status_counts(recorded_store), status_counts(synthetic_store)
    assert stats["Tasks"] == sum(a.values()) + sum(b.values())
    assert stats["Completed"] == a["complete"] + b["complete"]
    runs = table_with(parse(site / "runs.html"), "Last heartbeat")
    assert len(runs) == sum(rows(p, "select count(*) from runs")[0][0]
                            for p in (recorded_store, synthetic_store))
    text = (site / "index.html").read_text()
    assert Path(recorded_store).stem in text and "synth" in text


def test_rebuild_swaps_the_site_atomically(synthetic_store, tmp_path):
    site = tmp_path / "site"
    build_report([synthetic_store], site)
    (site / "stale.html").write_text("from an older build")
    first = (site / "index.html").stat().st_ino
    index = build_report([synthetic_store], site)
    assert index == site / "index.html" and index.is_file()
    assert not (site / "stale.html").exists()
    assert (site / MARKER).exists() and index.stat().st_ino != first
    # No temporary or old folders left next to it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]


def test_command_refuses_bad_input(cli, synthetic_store, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    result = cli.run("report", str(synthetic_store), "--out", str(foreign))
    assert_one_line_error(result)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert_one_line_error(cli.run("report", str(tmp_path / "missing.db")))
    not_db = tmp_path / "x.db"
    not_db.write_text("hello")
    assert_one_line_error(cli.run("report", str(not_db)))
    assert not_db.read_text() == "hello"
    assert_one_line_error(cli.run("report", str(synthetic_store),
                                  "--datasette-url", "javascript:alert(1)"))
    other = sqlite3.connect(str(tmp_path / "other.db"))
    other.execute("create table foo (x)")
    other.close()
    assert_one_line_error(cli.run("report", str(tmp_path / "other.db")))
    assert not cli.site.exists()


def test_command_uses_the_configured_store(cli, synthetic_store):
    copy_store(synthetic_store, cli.events)
    result = cli.run("report")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(cli.site / "index.html")
    assert (cli.site / "static" / "style.css").is_file()


def test_empty_store_and_racing_rebuilds(tmp_path, synthetic_store):
    import threading

    from hueyscope.events.schema import open_event_store

    open_event_store(str(tmp_path / "fresh.db")).close()
    index = build_report([tmp_path / "fresh.db"], tmp_path / "empty-site")
    assert "no events recorded yet" in index.read_text()
    assert {k: as_int(v) for k, v in parse(index).stats.items()}["Tasks"] == 0

    # A consumer's periodic rebuild and a manual one may overlap: each
    # finishes, and one complete site is left, with no debris beside it.
    site = tmp_path / "site"
    errors = []

    def rebuild():
        try:
            for _ in range(3):
                build_report([synthetic_store], site)
        except Exception as exc:  # reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=rebuild) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert (site / "index.html").is_file() and (site / "static" / "style.css").is_file()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_task_split_across_hosts_is_one_task(recorded_store, tmp_path):
    """Enqueued on a web host, executed on a worker: one row each, one task."""
    web = copy_store(recorded_store, tmp_path / "web.db")
    worker = copy_store(recorded_store, tmp_path / "worker.db")
    with sqlite3.connect(str(web)) as conn:
        # The producer's host only saw the enqueue.
        conn.execute("delete from events where signal != 'enqueued'")
        conn.execute("update tasks set status = 'enqueued', started = null, "
                     "finished = null, attempts = 0, duration = null, wait = null, "
                     "error_type = null, error = null, fingerprint = null, "
                     "run_id = null, updated = enqueued")
        conn.execute("delete from runs where role = 'consumer'")
    with sqlite3.connect(str(worker)) as conn:
        conn.execute("delete from events where signal = 'enqueued'")
        conn.execute("update tasks set enqueued = null")
        conn.execute("delete from runs where role != 'consumer'")
    site = tmp_path / "site"
    build_report([web, worker], site)
    stats = {k: as_int(v) for k, v in parse(site / "index.html").stats.items()}
    counts = status_counts(recorded_store)
    assert stats["Tasks"] == sum(counts.values())
    assert stats["Completed"] == counts["complete"]
    assert stats["Failed"] == counts["failed"]
    assert stats["Retried"] == rows(
        recorded_store, "select count(*) from tasks where attempts > 1")[0][0]
    # The earliest enqueue comes from the web host, the rest from the worker.
    retries = parse(site / "retries.html")
    assert {k: as_int(v) for k, v in retries.stats.items()}["Retried tasks"] == \
        stats["Retried"]
    first = rows(recorded_store, "select min(ts) from events")[0][0]
    assert '<time datetime="%s">' % iso(first) in (site / "index.html").read_text()


# -- charts ------------------------------------------------------------------

def utc(ts, fmt):
    import datetime
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime(fmt)


def check_time_chart(spec):
    """What holds for every time chart, whatever the store: returns the step.

    Bars sit in the middle of whole buckets inside the x range (no point
    outside the plot), ticks are bucket edges inside the range, every value
    is under the top of the y axis, and the hover label of each bar is its
    bucket at the same resolution as the ticks.
    """
    start, end = spec["range"]
    xs = spec["x"]
    step = (xs[1] - xs[0]) if len(xs) > 1 else (end - start)
    assert len(xs) == round((end - start) / step) >= 10
    assert all(start < x < end for x in xs), (spec["range"], xs[:3], xs[-3:])
    assert all(x - start == step * (i + 0.5) for i, x in enumerate(xs))
    for t, _ in spec["ticks"]:
        assert start <= t <= end and (t - start) % step == 0
    assert 2 <= len(spec["ticks"]) <= 9  # 8 spaces at most
    columns = [s["values"] for s in spec["series"]]
    tops = [sum(v or 0 for v in values) if spec["stacked"] else max(
        (v or 0) for v in values) for values in zip(*columns)]
    assert max(tops) <= spec["y_max"] == spec["y_ticks"][-1]
    fmt = "%H:%M:%S" if step < 60 else "%H:%M" if step < 86400 else None
    for x, label in zip(xs, spec["labels"]):
        bucket = x - step / 2
        if fmt:
            assert label == "%s %s–%s" % (utc(bucket, "%Y-%m-%d"), utc(bucket, fmt),
                                          utc(bucket + step, fmt))
        else:
            assert label == utc(bucket, "%Y-%m-%d")
    return step


def throughput_of(spec):
    """{bucket start: (completed, errors, locked)} of the non-empty bars."""
    step = spec["x"][1] - spec["x"][0]
    values = zip(*(s["values"] for s in spec["series"]))
    return {x - step / 2: v for x, v in zip(spec["x"], values) if any(v)}


def test_chart_of_a_single_event(recorded_store, tmp_path):
    store = trim_store(recorded_store, tmp_path / "one.db",
                       "id = (select min(id) from events where signal = 'complete')")
    assert rows(store, "select count(*) from events")[0][0] == 1
    (ts,), = rows(store, "select ts from events")
    index = build_report([store], tmp_path / "site")
    spec = chart_specs(index)["throughput"]
    # One bar of one second, in the middle of ten labelled seconds.
    assert check_time_chart(spec) == 1
    assert throughput_of(spec) == {int(ts): (1, 0, 0)}
    assert spec["range"][0] < ts < spec["range"][1]
    assert spec["x_label"] == "Time (UTC), one bar per second"
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d(\n\d{4}-\d\d-\d\d)?", label)
               for _, label in spec["ticks"])
    # No queue sample in one instant: the depth chart says so.
    assert "depth" not in chart_specs(index)
    assert "No data recorded." in index.read_text()
    # The table under the chart has the one bucket, readable without JS.
    table = table_with(parse(index), "locked out")
    assert [r["Time (UTC)"] for r in table] == [spec["labels"][spec["x"].index(
        int(ts) + 0.5)]]
    # Counts of one are singular everywhere.
    everything = " ".join(p.read_text() for p in pages(tmp_path / "site"))
    assert re.search(r"\b1 event\b", everything)
    assert not re.search(r"\b1 (tasks|events|runs|attempts|rows)\b", everything)


def test_charts_of_a_short_run_are_per_second(recorded_store, recorded_site):
    """The recorded run lasts seconds: one bar per second, ticks in seconds."""
    first, last = rows(recorded_store, "select min(ts), max(ts) from events")[0]
    assert last - first < 120, "the recorded run is short"
    index = recorded_site / "index.html"
    spec = chart_specs(index)["throughput"]
    assert check_time_chart(spec) == 1
    assert spec["range"][0] <= first and last < spec["range"][1]
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d(\n\d{4}-\d\d-\d\d)?", label)
               for _, label in spec["ticks"])
    # Each tick says the time of the bucket edge it stands on.
    for t, label in spec["ticks"]:
        assert label.split("\n")[0] == utc(t, "%H:%M:%S")
    # Every execution is in its second.
    bars = throughput_of(spec)
    per_second = {}
    for ts, signal in rows(recorded_store, "select ts, signal from events "
                           "where signal in ('complete', 'error', 'locked')"):
        per_second.setdefault(int(ts), []).append(signal)
    assert set(bars) == set(per_second)
    for second, signals in per_second.items():
        assert bars[second] == tuple(signals.count(s) for s in (
            "complete", "error", "locked"))
    # The table of numbers lists the same buckets under the same labels.
    table = table_with(parse(index), "locked out")
    labels = dict(zip(spec["x"], spec["labels"]))
    assert [r["Time (UTC)"] for r in table] == [
        labels[t + 0.5] for t in sorted(bars)]
    assert [as_int(r["completed"]) for r in table] == [
        bars[t][0] for t in sorted(bars)]
    # Queue depth, sampled every half second, is drawn per second too.
    depth = chart_specs(index)["depth"]
    assert check_time_chart(depth) == 1
    # Task pages use the same buckets, with only their task's executions.
    page = recorded_site / "tasks" / ("%s.html" % slug("flaky_network_call"))
    task = chart_specs(page)["throughput"]
    assert task["range"] == spec["range"] and check_time_chart(task) == 1
    errors = rows(recorded_store, "select count(*) from events where "
                  "task = 'flaky_network_call' and signal = 'error'")[0][0]
    assert sum(e for _, e, _ in throughput_of(task).values()) == errors


def test_charts_of_days_follow_the_period(synthetic_store, tmp_path):
    """Three days: hourly bars, ticks in hours with dates; 90 days: days."""
    index = build_report([synthetic_store], tmp_path / "days")
    spec = chart_specs(index)["throughput"]
    assert check_time_chart(spec) == 3600
    assert all(re.fullmatch(r"\d\d:00(\n\d{4}-\d\d-\d\d)?", label)
               for _, label in spec["ticks"])
    assert sum("\n" in label for _, label in spec["ticks"]) >= 2  # dates change
    (completed,), = rows(synthetic_store, "select sum(count) from rollup_hourly "
                         "where signal = 'complete'")
    assert sum(c for c, _, _ in throughput_of(spec).values()) == completed
    check_time_chart(chart_specs(index)["depth"])

    long_store = stretch_store(synthetic_store, tmp_path / "long.db", 90)
    index = build_report([long_store], tmp_path / "long")
    spec = chart_specs(index)["throughput"]
    assert check_time_chart(spec) == 86400
    assert all(re.fullmatch(r"\d\d-\d\d(\n\d{4})?", label)
               for _, label in spec["ticks"])
    assert spec["x_label"] == "Time (UTC), one bar per day"
    (completed,), = rows(long_store, "select count(*) from events "
                         "where signal = 'complete'")
    assert sum(c for c, _, _ in throughput_of(spec).values()) == completed


def test_run_ids_are_whole_or_readably_shortened(recorded_store, recorded_site,
                                                  synthetic_store, tmp_path):
    text = (recorded_site / "runs.html").read_text()
    for (run_id,) in rows(recorded_store, "select id from runs"):
        # host:pid:started ids are short enough to show whole.
        assert ">%s</code>" % run_id in text and 'title="%s"' % run_id in text
    build_report([synthetic_store], tmp_path / "site")
    text = (tmp_path / "site" / "runs.html").read_text()
    for (run_id,) in rows(synthetic_store, "select id from runs"):
        assert ">%s…</code>" % run_id[:8] in text and 'title="%s"' % run_id in text


def test_busy_stores_draw_task_pages_from_the_roll_ups(tmp_path, monkeypatch):
    """A day: the overview counts 15-minute buckets from the events; past
    TASK_EVENTS events, task pages use hourly roll-ups (cheaper) instead."""
    from hueyscope.reports import timeline

    store = tmp_path / "day.db"
    build_synthetic(store, events=4000, seed=9, days=1)
    page = "tasks/%s.html" % slug("slow_io")
    build_report([store], tmp_path / "quiet")
    assert check_time_chart(chart_specs(tmp_path / "quiet" / page)["throughput"]) == 900
    monkeypatch.setattr(timeline, "TASK_EVENTS", 1000)
    build_report([store], tmp_path / "busy")
    overview = chart_specs(tmp_path / "busy" / "index.html")["throughput"]
    task = chart_specs(tmp_path / "busy" / page)["throughput"]
    assert check_time_chart(overview) == 900 and check_time_chart(task) == 3600
    (completed,), = rows(store, "select count(*) from events where "
                         "task = 'slow_io' and signal = 'complete'")
    assert sum(c for c, _, _ in throughput_of(task).values()) == completed


@pytest.mark.timeout(300)
def test_report_reads_more_stores_than_sqlite_attaches(tmp_path):
    """Twelve hosts' stores, more than this SQLite's attach limit of ten:
    every host's tasks and runs are in the one report."""
    stores, tasks = [], 0
    for i in range(12):
        path = tmp_path / ("host%02d.db" % i)
        build_synthetic(path, events=1500, seed=100 + i, days=1)
        with sqlite3.connect(str(path)) as conn:
            conn.execute("update runs set host = ?", ("host-%02d" % i,))
            conn.execute("update tasks set task = ? where rowid = "
                         "(select min(rowid) from tasks)", ("only_on_%02d" % i,))
        conn.close()
        tasks += rows(path, "select count(*) from tasks")[0][0]
        stores.append(path)
    site = tmp_path / "site"
    result = run_cli(["report", *stores, "--out", site], tmp_path,
                     env=cli_env(tmp_path), timeout=240)
    assert result.returncode == 0, result.stderr
    stats = {k: as_int(v) for k, v in parse(site / "index.html").stats.items()}
    assert stats["Tasks"] == tasks
    index = (site / "index.html").read_text()
    runs = (site / "runs.html").read_text()
    for i in range(12):
        assert "only_on_%02d" % i in index
        assert "host-%02d" % i in runs
        assert "host%02d" % i in index  # each file named among the sources
