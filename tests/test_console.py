"""The console in-process, through Datasette's own client: pages, JSON, who may act.

A real consumer fills a real queue's failed set once per module
(tests/truth_app.py's ``always_fails`` and ``fails_until_fixed``); then the
console is built the way ``hueyscope browse --queue`` builds it and asked
as an anonymous visitor, as root, with and without Datasette's CSRF token.
"""
import asyncio
import re

import pytest

from conftest import CLI, environ_restored, query, scalar, wait_until
from hueyscope.browse.app import make_datasette
from test_record_truth import TESTS, consume, produce, statuses

FAILING = 6  # always_fails tasks in the failed set


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A queue with FAILING failed-set entries, a scheduled task and its store."""
    cli = CLI(tmp_path_factory.mktemp("console"))
    cli.env.update(PYTHONPATH=str(TESTS), HUEYSCOPE_APP="truth_app:huey",
                   TRUTH_COUNTER=str(cli.folder / "retries.txt"),
                   TRUTH_FIXED=str(cli.folder / "fixed.txt"))
    ids = produce(cli, "print(*[a.always_fails().id for _ in range(%d)])"
                  % FAILING).stdout.split()
    consumer = consume(cli)
    try:
        wait_until(lambda: statuses(cli, *ids) == ["failed"] * FAILING,
                   timeout=90, message="the tasks to fail for good")
        cli.pipeline = produce(cli, "p = a.fetch.s(1).then(a.transform).then(a.store); "
                               "a.huey.enqueue(p); print(p.id)").stdout.strip()
        wait_until(lambda: len(query(cli.events, "select 1 from tasks where "
                                     "task like '%store' and status = 'complete'")),
                   timeout=90, message="the pipeline to complete")
        # The consumer moves a task with an eta to the schedule.
        cli.scheduled = produce(
            cli, "print(a.add.schedule((1, 2), delay=3600).id)").stdout.strip()
        wait_until(lambda: scalar(cli.queue, "select count(*) from schedule"),
                   message="the task on the schedule")
    finally:
        assert consumer.stop() == 0, consumer.describe()
    cli.failed_ids = ids
    yield cli
    cli.close()


@pytest.fixture(scope="module")
def ds(folder):
    import os
    import sys

    with environ_restored(("HUEYSCOPE_", "TRUTH_")):
        os.environ.update({k: v for k, v in folder.env.items()
                           if k.startswith("TRUTH_")})
        sys.path.insert(0, str(TESTS))
        yield make_datasette([folder.events], console={
            "queue": str(folder.queue), "app": "truth_app:huey",
            "events": str(folder.events)})


def call(coro):
    return asyncio.run(coro)


def root_cookies(ds):
    return {"ds_actor": ds.sign({"a": {"id": "root"}}, "actor")}


def csrf(ds, cookies):
    """(cookies with ds_csrftoken, the token) as a browser gets them from a page."""
    page = call(ds.client.get("/-/hueyscope", cookies=cookies))
    assert page.status_code == 200, page.text
    token = re.search(r'name="csrftoken" value="([^"]+)"', page.text).group(1)
    return dict(cookies, ds_csrftoken=page.cookies.get("ds_csrftoken")
                or cookies.get("ds_csrftoken")), token


def failed_count(folder):
    return scalar(folder.queue, "select count(*) from hueyscope_dead_letter")


@pytest.mark.timeout(120)
def test_the_now_page_and_its_json_show_the_queue(ds, folder):
    page = call(ds.client.get("/-/hueyscope"))
    assert page.status_code == 200, page.text
    assert "Failed set" in page.text and "always_fails" in page.text
    # Anonymous: the page, no action button, no CSRF form.
    assert 'name="csrftoken"' not in page.text
    assert "Retry…" not in page.text
    data = call(ds.client.get("/-/hueyscope/now.json")).json()
    now = data["now"]
    assert now["failed_total"] == FAILING
    [group] = [g for g in now["failed"] if g["short"] == "always_fails"]
    assert group["count"] == FAILING and group["fingerprint"]
    assert [s["task_id"] for s in now["scheduled"]["items"]] == [folder.scheduled]
    assert now["consumers"] == []  # the consumer stopped and let go
    assert "hs-failed" in data["html"]
    # Root sees the buttons.
    page = call(ds.client.get("/-/hueyscope", cookies=root_cookies(ds)))
    assert "Retry…" in page.text and 'name="csrftoken"' in page.text


@pytest.mark.timeout(120)
def test_the_task_page_shows_every_event_and_the_traceback(ds, folder):
    task_id = folder.failed_ids[0]
    page = call(ds.client.get("/-/hueyscope/task/%s" % task_id))
    assert page.status_code == 200, page.text
    assert "ValueError" in page.text and "no luck" in page.text
    assert "Traceback" in page.text
    data = call(ds.client.get("/-/hueyscope/task/%s.json" % task_id)).json()
    signals = [e["signal"] for e in data["events"]]
    assert signals[0] == "enqueued" and signals[-1] == "error"
    assert [a["attempt"] for a in data["attempts"]] == [1, 2, 3]
    assert call(ds.client.get("/-/hueyscope/task/nope")).status_code == 404
    # Task ids in Datasette's tables link to the console.
    table = call(ds.client.get("/events/events?task_id=%s" % task_id))
    assert "/-/hueyscope/task/%s" % task_id in table.text


@pytest.mark.timeout(120)
def test_anonymous_posts_get_403_and_change_nothing(ds, folder):
    before = failed_count(folder)
    for action in ("retry", "discard", "revoke", "restore", "recover",
                   "pause", "resume"):
        form = call(ds.client.post("/-/hueyscope/%s" % action,
                                   data={"task": "always_fails"}))
        assert form.status_code == 403, (action, form.text)
        api = call(ds.client.post("/-/hueyscope/%s" % action,
                                  json={"task": "always_fails"}))
        assert api.status_code == 403 and api.json()["ok"] is False
    assert call(ds.client.get("/-/hueyscope/preview?action=retry&task=x")).status_code == 403
    assert failed_count(folder) == before
    # Someone logged in but not allowed to operate: 403 as well.
    alice = {"ds_actor": ds.sign({"a": {"id": "alice"}}, "actor")}
    cookies, token = csrf(ds, alice)
    denied = call(ds.client.post("/-/hueyscope/discard", cookies=cookies,
                                 data={"csrftoken": token, "task": "always_fails"}))
    assert denied.status_code == 403
    assert failed_count(folder) == before


@pytest.mark.timeout(120)
def test_a_form_post_needs_the_csrf_token(ds, folder):
    before = failed_count(folder)
    cookies, token = csrf(ds, root_cookies(ds))
    forged = call(ds.client.post("/-/hueyscope/discard", cookies=cookies,
                                 data={"task": "always_fails"}))
    assert forged.status_code == 403 and "did not match" in forged.text
    assert failed_count(folder) == before


@pytest.mark.timeout(120)
def test_root_previews_then_discards_exactly_that_many_on_record(ds, folder):
    cookies, token = csrf(ds, root_cookies(ds))
    fingerprint = call(ds.client.get("/-/hueyscope/now.json")).json()["now"]["failed"][0]["fingerprint"]
    preview = call(ds.client.get("/-/hueyscope/preview?action=discard&kind=failed"
                                 "&fingerprint=%s" % fingerprint, cookies=cookies))
    assert preview.status_code == 200, preview.text
    count = int(re.search(r'data-count="(\d+)"', preview.text).group(1))
    ids = re.search(r'name="ids" value="([^"]*)"', preview.text).group(1).split()
    assert count == len(ids) == failed_count(folder) == FAILING
    done = call(ds.client.post("/-/hueyscope/discard", cookies=cookies, data={
        "csrftoken": token, "ids": " ".join(ids[:2]), "expected": "2"}))
    assert done.status_code == 302, done.text
    assert failed_count(folder) == FAILING - 2
    gone = set(folder.failed_ids) - {r[0] for r in query(
        folder.queue, "select task_id from hueyscope_dead_letter")}
    assert len(gone) == 2
    # On record, naming root; the task's status stays failed.
    wait_until(lambda: len(query(folder.events, "select 1 from events where "
                                 "signal = 'discard'")) == 2,
               message="the discards on record")
    reasons = [r for r, in query(folder.events, "select error from events "
                                  "where signal = 'discard'")]
    assert all("asked by root" in r for r in reasons)
    assert statuses(folder, *gone) == ["failed", "failed"]
    page = call(ds.client.get("/-/hueyscope/task/%s" % sorted(gone)[0]))
    assert "asked by root" in page.text


@pytest.mark.timeout(120)
def test_the_json_api_with_a_dry_run_and_bad_input(ds, folder):
    cookies, token = csrf(ds, root_cookies(ds))
    headers = {"x-csrftoken": token}
    dry = call(ds.client.post("/-/hueyscope/retry", cookies=cookies, headers=headers,
                              json={"task": "always_fails", "dry_run": True}))
    assert dry.status_code == 200, dry.text
    body = dry.json()
    assert body["ok"] and body["dry_run"] and body["count"] == failed_count(folder)
    assert all("data" not in e for e in body["touched"])
    bad = call(ds.client.post("/-/hueyscope/retry", cookies=cookies, headers=headers,
                              json={"ids": [4242]}))
    assert bad.status_code == 400 and "4242" in bad.json()["error"]
    # A JSON POST carrying the session cookie but no token is refused.
    forged = call(ds.client.post("/-/hueyscope/retry", cookies=cookies,
                                 json={"task": "always_fails"}))
    assert forged.status_code == 403


@pytest.mark.timeout(120)
def test_root_revokes_the_scheduled_task_on_record(ds, folder):
    cookies, token = csrf(ds, root_cookies(ds))
    done = call(ds.client.post("/-/hueyscope/revoke", cookies=cookies,
                               headers={"x-csrftoken": token},
                               json={"ids": [folder.scheduled]}))
    assert done.status_code == 200, done.text
    assert done.json()["touched"] == [{"task_id": folder.scheduled, "task": None}]
    now = call(ds.client.get("/-/hueyscope/now.json")).json()["now"]
    assert now["revoked"]["ids"] == [folder.scheduled]
    wait_until(lambda: query(folder.events, "select error from events where "
                             "signal = 'revoke'"), message="the revoke on record")
    page = call(ds.client.get("/-/hueyscope/task/%s" % folder.scheduled))
    assert "asked by root" in page.text
    done = call(ds.client.post("/-/hueyscope/restore", cookies=cookies,
                               headers={"x-csrftoken": token},
                               json={"ids": [folder.scheduled]}))
    assert done.status_code == 200
    assert call(ds.client.get("/-/hueyscope/now.json")).json()["now"]["revoked"]["ids"] == []


@pytest.mark.timeout(120)
def test_root_pauses_and_resumes_a_task_name_on_record(ds, folder):
    cookies, token = csrf(ds, root_cookies(ds))

    def post(action, **body):
        done = call(ds.client.post("/-/hueyscope/" + action, cookies=cookies,
                                   headers={"x-csrftoken": token}, json=body))
        assert done.status_code == 200, done.text
        return done.json()

    assert post("pause", task="add", dry_run=True)["count"] == 1
    assert call(ds.client.get("/-/hueyscope/now.json")).json()["now"]["paused"] == []
    assert post("pause", task="add")["count"] == 1
    paused = call(ds.client.get("/-/hueyscope/now.json")).json()["now"]["paused"]
    assert [(p["short"], p["actor"]) for p in paused] == [("add", "root")]
    page = call(ds.client.get("/-/hueyscope", cookies=cookies))
    assert 'action="/-/hueyscope/resume"' in page.text
    wait_until(lambda: query(folder.events, "select task from events where "
                             "signal = 'pause'"), message="the pause on record")
    assert post("resume", task=paused[0]["task"])["count"] == 1
    assert call(ds.client.get("/-/hueyscope/now.json")).json()["now"]["paused"] == []


@pytest.mark.timeout(60)
def test_the_now_page_shows_concurrency_slots_waited_for(ds, folder):
    """A message waiting for a slot of a concurrency limit shows under
    Limits (written here as an enqueue of a limited task writes it)."""
    import sqlite3

    def write(sql, params=()):
        conn = sqlite3.connect(str(folder.queue))
        try:
            with conn:
                conn.execute(sql, params)
        finally:
            conn.close()

    write("insert into task (queue, data, priority, hueyscope_slot, "
          "hueyscope_limit) values ('truth', x'00', 0, 'reports', 2)")
    try:
        now = call(ds.client.get("/-/hueyscope/now.json")).json()["now"]
        assert now["limits"] == [{"slot": "reports", "running": 0,
                                  "limit": 2, "waiting": 1}]
        assert now["unique_keys"] == 0
        assert 'id="hs-limits"' in call(ds.client.get("/-/hueyscope")).text
    finally:
        write("delete from task where hueyscope_slot = 'reports'")


@pytest.mark.timeout(60)
def test_actions_on_a_public_address_without_authentication_are_refused(folder):
    from conftest import assert_one_line_error

    result = folder.run("browse", "--host", "0.0.0.0", "-p", "0",
                        "--queue", str(folder.queue))
    assert_one_line_error(result)
    assert "no authentication" in result.stderr


@pytest.mark.timeout(60)
def test_a_bad_app_for_the_console_is_one_line(folder):
    from conftest import assert_one_line_error

    result = folder.run("browse", "-p", "0", "--queue", str(folder.queue),
                        "--app", "no_such_module:huey")
    assert_one_line_error(result)


@pytest.mark.timeout(60)
def test_the_task_page_draws_the_pipeline_with_each_steps_state(ds, folder):
    data = call(ds.client.get("/-/hueyscope/task/%s.json" % folder.pipeline)).json()
    steps = [(s["task"].rsplit(".", 1)[-1], s["status"]) for s in data["pipeline"]]
    assert steps == [("fetch", "complete"), ("transform", "complete"),
                     ("store", "complete")]
    last = data["pipeline"][-1]["task_id"]
    page = call(ds.client.get("/-/hueyscope/task/%s" % last))
    assert page.text.count('class="step s-complete') == 3
    assert "/-/hueyscope/task/%s" % folder.pipeline in page.text


@pytest.mark.timeout(60)
def test_plain_datasette_loads_the_console_through_its_entry_point(folder):
    import subprocess

    from conftest import BIN

    env = dict(folder.env, PYTHONPATH=str(TESTS), HUEYSCOPE_APP="truth_app:huey")
    result = subprocess.run(
        [str(BIN / "datasette"), str(folder.events), "--get", "/-/hueyscope/now.json"],
        cwd=folder.folder, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert '"failed_total"' in result.stdout


# -- API tokens ------------------------------------------------------------------

TOKEN = "t0k3n-for-scripts-0123456789"


def tokened(folder, password=None):
    """The console as ``browse --queue --token-env CI_TOKEN`` builds it."""
    from hueyscope.serving import Tokens

    return make_datasette([folder.events], password=password, tokens=Tokens(
        {TOKEN: "api:CI_TOKEN"}), console={
            "queue": str(folder.queue), "app": "truth_app:huey",
            "events": str(folder.events)})


def bearer(token=TOKEN):
    return {"authorization": "Bearer %s" % token}


@pytest.mark.timeout(120)
def test_a_script_with_an_api_token_acts_without_cookie_or_csrf_token(ds, folder):
    # ``ds`` is in the module already: its environment and import path.
    scripted = tokened(folder)
    done = call(scripted.client.post("/-/hueyscope/revoke", headers=bearer(),
                                     json={"ids": [folder.scheduled]}))
    assert done.status_code == 200, done.text
    assert done.json()["count"] == 1
    wait_until(lambda: query(folder.events, "select 1 from events where signal = "
                             "'revoke' and error like '%asked by api:CI_TOKEN'"),
               message="the revoke on record, naming the token")
    assert call(scripted.client.get("/-/hueyscope/now.json")).json()[
        "now"]["revoked"]["ids"] == [folder.scheduled]
    # A wrong token, another scheme, or a token another server was given:
    # anonymous, 403, and nothing changes.
    for headers in (bearer("x" + TOKEN), bearer(TOKEN[:-1]),
                    {"authorization": "Basic %s" % TOKEN}):
        denied = call(scripted.client.post("/-/hueyscope/restore", headers=headers,
                                           json={"ids": [folder.scheduled]}))
        assert denied.status_code == 403, headers
    denied = call(ds.client.post("/-/hueyscope/restore", headers=bearer(),
                                 json={"ids": [folder.scheduled]}))
    assert denied.status_code == 403
    assert call(scripted.client.get("/-/hueyscope/now.json")).json()[
        "now"]["revoked"]["ids"] == [folder.scheduled]
    done = call(scripted.client.post("/-/hueyscope/restore", headers=bearer(),
                                     json={"ids": [folder.scheduled]}))
    assert done.status_code == 200, done.text
    assert call(scripted.client.get("/-/hueyscope/now.json")).json()[
        "now"]["revoked"]["ids"] == []


@pytest.mark.timeout(120)
def test_an_api_token_stands_in_for_the_password(ds, folder):
    import base64

    guarded = tokened(folder, password="pw-for-people")
    assert call(guarded.client.get("/-/hueyscope/now.json")).status_code == 401
    assert call(guarded.client.get("/-/hueyscope/now.json",
                                   headers=bearer("nope" * 6))).status_code == 401
    basic = {"authorization": "Basic " + base64.b64encode(b"me:pw-for-people").decode()}
    assert call(guarded.client.get("/-/hueyscope/now.json", headers=basic)).status_code == 200
    dry = call(guarded.client.post("/-/hueyscope/retry", headers=bearer(), json={
        "task": "always_fails", "dry_run": True}))
    assert dry.status_code == 200 and dry.json()["count"] == failed_count(folder)
    # The password lets people read; acting still needs an operator.
    assert call(guarded.client.post("/-/hueyscope/retry", headers=basic, json={
        "task": "always_fails", "dry_run": True})).status_code == 403


@pytest.mark.timeout(120)
def test_browse_serves_token_env_and_refuses_a_bad_one(folder):
    import httpx

    from conftest import assert_one_line_error

    for env, says in (({}, "unset or empty"), ({"CI_TOKEN": "short"}, "at least 20"),
                      ({"CI_TOKEN": " " + TOKEN}, "at least 20")):
        result = folder.run("browse", "-p", "0", "--queue", str(folder.queue),
                            "--token-env", "CI_TOKEN", **env)
        assert_one_line_error(result)
        assert says in result.stderr
    # On a public address a token is authentication enough for actions.
    started = folder.start("browse", "-p", "0", "--host", "0.0.0.0",
                           "--queue", str(folder.queue), "--token-env", "CI_TOKEN",
                           "--allow-host", "127.0.0.1", name="browse-token",
                           CI_TOKEN=TOKEN, PYTHONPATH=str(TESTS),
                           HUEYSCOPE_APP="truth_app:huey")
    try:
        port = wait_until(lambda: re.search(r"Serving at http://\S+:(\d+)/",
                                            started.stdout) or started.proc.poll(),
                          timeout=60, message="browse to serve")
        assert not isinstance(port, int), started.describe()
        url = "http://127.0.0.1:%s/-/hueyscope/retry" % port.group(1)
        body = {"task": "always_fails", "dry_run": True}
        assert httpx.post(url, json=body, timeout=30).status_code == 403
        answer = httpx.post(url, json=body, headers=bearer(), timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["count"] == failed_count(folder)
    finally:
        started.kill()
