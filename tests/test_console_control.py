"""The console and running work: progress, log lines and cancel, with a real consumer.

One real consumer (``hueyscope consume``, thread workers) runs
tests/control_app.py's tasks for the whole module; the console is built
in-process the way ``hueyscope browse --queue`` builds it and asked through
Datasette's own client, against the real queue and event store. Every
wait is on a condition, with generous bounds.
"""
import asyncio
import re
import sqlite3
import subprocess
import sys

import pytest

from conftest import CLI, environ_restored, query, scalar, wait_until
from hueyscope.browse.app import make_datasette
from test_control import TESTS, signals_of, wait_signal

WAIT = 90  # seconds, for anything a busy 2-core machine does in one


def enqueue(cli, code):
    done = subprocess.run([sys.executable, "-c", "import control_app as a; " + code],
                          cwd=cli.folder, env=cli.env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def logs_of(cli, task_id):
    return query(cli.events, "select attempt, level, logger, message from "
                 "task_logs where task_id = ? order by id", (task_id,))


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """A consumer running control_app's tasks; ``steps`` has run to its end."""
    cli = CLI(tmp_path_factory.mktemp("console-control"))
    cli.env.update(PYTHONPATH=str(TESTS), HUEYSCOPE_APP="control_app:huey")
    cli.consumer = cli.start("consume", "--workers", "2", "--no-periodic",
                             "--max-delay", "0.2", name="consumer")
    [cli.steps] = enqueue(cli, "print(a.steps(3, 0).id)")
    wait_signal(cli, cli.steps, "complete", timeout=WAIT)
    wait_until(lambda: len(logs_of(cli, cli.steps)) == 3 and query(
        cli.events, "select 1 from task_progress where task_id = ? and "
        "fraction = 1.0", (cli.steps,)), timeout=WAIT,
        message="the log lines and last progress of steps")
    yield cli
    cli.close()


def _datasette(app, paths, database=None):
    config = {"queue": str(app.queue), "app": "control_app:huey",
              "events": str(app.events)}
    if database:
        config["database"] = database
    return make_datasette(paths, console=config)


@pytest.fixture(scope="module")
def ds(app):
    with environ_restored(("HUEYSCOPE_",)):
        sys.path.insert(0, str(TESTS))
        yield _datasette(app, [app.events])


def call(coro):
    return asyncio.run(coro)


def root(ds):
    """(cookies, CSRF token) of root, as a browser gets them from a page."""
    cookies = {"ds_actor": ds.sign({"a": {"id": "root"}}, "actor")}
    page = call(ds.client.get("/-/hueyscope", cookies=cookies))
    assert page.status_code == 200, page.text
    token = re.search(r'name="csrftoken" value="([^"]+)"', page.text).group(1)
    return dict(cookies, ds_csrftoken=page.cookies.get("ds_csrftoken")), token


def api(ds, action, body, as_root=True):
    if not as_root:
        return call(ds.client.post("/-/hueyscope/%s" % action, json=body))
    cookies, token = root(ds)
    return call(ds.client.post("/-/hueyscope/%s" % action, cookies=cookies,
                               headers={"x-csrftoken": token}, json=body))


def running_row(ds, task_id):
    now = call(ds.client.get("/-/hueyscope/now.json")).json()["now"]
    return next((r for r in now.get("running", []) if r["task_id"] == task_id), None)


def nothing_asked(app):
    """No cancel request and no revocation in the queue."""
    return (scalar(app.queue, "select count(*) from hueyscope_cancel") == 0
            and not query(app.queue, "select key from kv where key like 'r:%'"))


@pytest.mark.timeout(180)
def test_the_task_page_shows_progress_and_log_lines(ds, app):
    data = call(ds.client.get("/-/hueyscope/task/%s.json" % app.steps)).json()
    assert (data["progress"]["fraction"], data["progress"]["message"]) == (1.0, "step 3")
    assert [(l["attempt"], l["level"], l["logger"], l["message"])
            for l in data["logs"]] == [
        (1, "INFO", "control_app", "step %d of 3 password=***" % n) for n in (1, 2, 3)]
    assert data["cancelable"] is False  # complete
    page = call(ds.client.get("/-/hueyscope/task/%s" % app.steps,
                              cookies=root(ds)[0])).text
    assert 'id="hs-progress"' in page and "100% step 3" in page
    assert page.count('class="hs-log level-INFO"') == 3
    assert "step 2 of 3 password=***" in page and "hunter2" not in page
    assert "/events/task_logs?task_id=%s" % app.steps in page
    assert 'id="hs-cancel"' not in page  # nothing to cancel


@pytest.mark.timeout(180)
def test_a_store_older_than_progress_and_logs_shows_neither(ds, app, tmp_path):
    older = tmp_path / "older.db"
    source = sqlite3.connect("file:%s?mode=ro" % app.events, uri=True, timeout=30)
    target = sqlite3.connect(str(older))
    source.backup(target)
    source.close()
    target.execute("drop table task_logs")
    target.execute("drop table task_progress")
    target.commit()
    target.close()
    ds_older = _datasette(app, [older], database="older")
    data = call(ds_older.client.get("/-/hueyscope/task/%s.json" % app.steps)).json()
    assert data["task"]["status"] == "complete"
    assert data["progress"] is None and data["logs"] == []
    page = call(ds_older.client.get("/-/hueyscope/task/%s" % app.steps))
    assert page.status_code == 200, page.text
    assert 'id="hs-progress"' not in page.text and 'id="hs-logs"' not in page.text
    assert call(ds_older.client.get("/-/hueyscope")).status_code == 200


@pytest.mark.timeout(240)
def test_a_running_tasks_progress_shows_and_the_json_api_cancels_it(ds, app):
    release = app.folder / "never-released"
    [task_id] = enqueue(app, "print(a.half_way(%r).id)" % str(release))
    # Live on the Now page, and on the task page with its log line.
    row = wait_until(lambda: (running_row(ds, task_id) or {}).get("progress"),
                     timeout=WAIT, message="the running task's progress on Now")
    assert (row["fraction"], row["message"]) == (0.5, "half way")
    cookies, _ = root(ds)
    now = call(ds.client.get("/-/hueyscope", cookies=cookies)).text
    assert "50% half way" in now and 'class="hs-cancel"' in now
    wait_until(lambda: logs_of(app, task_id), timeout=WAIT, message="its log line")
    data = call(ds.client.get("/-/hueyscope/task/%s.json" % task_id)).json()
    assert data["cancelable"] and data["lease"] is not None
    assert [(l["level"], l["message"]) for l in data["logs"]] == [
        ("WARNING", "waiting for %s" % release)]
    page = call(ds.client.get("/-/hueyscope/task/%s" % task_id, cookies=cookies)).text
    assert "50% half way" in page and 'id="hs-cancel"' in page

    # Anonymous: 403, nothing asked of the queue.
    denied = api(ds, "cancel", {"ids": [task_id]}, as_root=False)
    assert denied.status_code == 403 and denied.json()["ok"] is False
    form = call(ds.client.post("/-/hueyscope/cancel", data={"ids": task_id}))
    assert form.status_code == 403
    assert nothing_asked(app) and "revoke" not in signals_of(app, task_id)

    # A dry run counts and changes nothing; then root cancels it.
    dry = api(ds, "cancel", {"ids": [task_id], "dry_run": True})
    assert dry.status_code == 200, dry.text
    assert dry.json()["count"] == 1 and dry.json()["touched"] == [
        {"task_id": task_id, "task": "half_way", "state": "running"}]
    assert nothing_asked(app)
    done = api(ds, "cancel", {"ids": [task_id]})
    assert done.status_code == 200, done.text
    assert done.json()["ok"] and done.json()["count"] == 1
    wait_signal(app, task_id, "canceled", timeout=WAIT)
    # The request, recorded by the console's own recorder.
    wait_signal(app, task_id, "revoke", timeout=WAIT)
    [(error,)] = query(app.events, "select error from events where task_id = ? "
                       "and signal = 'canceled'", (task_id,))
    assert "canceled by hand, asked by root" in error
    wait_until(lambda: query(app.events, "select 1 from tasks where task_id = ? "
                             "and status = 'canceled'", (task_id,)),
               timeout=WAIT, message="the task's status")
    page = call(ds.client.get("/-/hueyscope/task/%s" % task_id)).text
    actions = re.search(r'<ul id="hs-actions">(.*?)</ul>', page, re.S).group(1)
    assert "<b>canceled</b>: canceled by hand, asked by root" in actions
    assert "<b>revoke</b>: canceled by hand, asked by root" in actions
    # The request goes at the consumer's next look after the lease settles
    # (so the task is no longer running), the revocation as the worker lets
    # go of the task: neither outlives it.
    wait_until(lambda: nothing_asked(app), timeout=WAIT,
               message="the request and the revocation to go")
    # Canceling it again: one line, 400.
    again = api(ds, "cancel", {"ids": [task_id]})
    assert again.status_code == 400 and "finished already" in again.json()["error"]
    assert nothing_asked(app)


@pytest.mark.timeout(240)
def test_cancel_by_name_previews_a_count_then_cancels_exactly_those(ds, app):
    ids = enqueue(app, "print(*[a.polite(300).id for _ in range(3)])")

    def dry_count():
        body = api(ds, "cancel", {"task": "polite", "dry_run": True}).json()
        return body["count"] == 3 and body

    # Running or pending, each counted once (a task moving meanwhile may
    # be missed by one look: look again).
    body = wait_until(dry_count, timeout=WAIT, message="a dry run counting 3")
    assert sorted(t["task_id"] for t in body["touched"]) == sorted(ids)
    assert nothing_asked(app)

    # Nobody but an operator previews or cancels.
    assert call(ds.client.get("/-/hueyscope/preview?action=cancel&task=polite")
                ).status_code == 403
    assert api(ds, "cancel", {"task": "polite"}, as_root=False).status_code == 403
    alice = {"ds_actor": ds.sign({"a": {"id": "alice"}}, "actor")}
    assert call(ds.client.post("/-/hueyscope/cancel", cookies=alice,
                               json={"task": "polite"})).status_code == 403
    assert nothing_asked(app)
    assert not any("revoke" in signals_of(app, t) for t in ids)

    cookies, token = root(ds)
    now = call(ds.client.get("/-/hueyscope", cookies=cookies)).text
    assert 'id="hs-cancel-bulk"' in now

    def preview():
        page = call(ds.client.get("/-/hueyscope/preview?action=cancel&task=polite",
                                  cookies=cookies))
        assert page.status_code == 200, page.text
        count = int(re.search(r'data-count="(\d+)"', page.text).group(1))
        return count == 3 and page.text

    page = wait_until(preview, timeout=WAIT, message="a preview of 3")
    previewed = re.search(r'name="ids" value="([^"]*)"', page).group(1).split()
    assert sorted(previewed) == sorted(ids)
    assert 'name="previewed" value="1"' in page
    done = call(ds.client.post("/-/hueyscope/cancel", cookies=cookies, data={
        "csrftoken": token, "ids": " ".join(previewed), "expected": "3",
        "previewed": "1"}))
    assert done.status_code == 302, done.text
    # Running ones stopped (canceled), a pending one skipped (revoked).
    wait_until(lambda: all(
        {"canceled", "revoked"} & set(signals_of(app, t)) for t in ids),
        timeout=WAIT, message="the three tasks to stop")

    def reasons():
        found = [r for r, in query(app.events, "select error from events where "
                                   "signal = 'revoke' and task_id in (?, ?, ?)", ids)]
        return len(found) == 3 and found

    assert all("asked by root" in r for r in wait_until(
        reasons, timeout=WAIT, message="the three requests on record"))
    assert not any("complete" in signals_of(app, t) for t in ids)
    # Confirming a preview whose tasks are gone acts on none, and says so
    # (gone from the queue too: a stopped task's lease is released as its
    # worker lets go of it).
    wait_until(lambda: scalar(app.queue, "select count(*) from task") == 0
               and scalar(app.queue, "select count(*) from hueyscope_lease") == 0,
               timeout=WAIT, message="the three tasks gone from the queue")
    late = call(ds.client.post("/-/hueyscope/cancel", cookies=cookies, headers={
        "x-csrftoken": token}, json={"ids": previewed, "previewed": True}))
    assert late.status_code == 200 and late.json()["count"] == 0


@pytest.mark.timeout(120)
def test_the_consumer_stops_cleanly_after_the_cancels(app):
    wait_until(lambda: scalar(app.queue, "select count(*) from hueyscope_lease") == 0,
               timeout=WAIT, message="every lease settled")
    assert app.consumer.stop() == 0, app.consumer.describe()
