"""The console in headless Chromium: a served ``hueyscope browse --queue --root``, real consumers.

One served console per queue engine (SQLite, PostgreSQL) with tests/console_app.py's
tasks: an operator logged in with the root URL the command prints, an
anonymous visitor, and consumers started, stopped and SIGKILLed for real.
Each test acts on tasks of its own, and checks the queue and the event
store after every action, not only the page.
"""
import json
import re
import signal
import urllib.request

import pytest

from conftest import CLI, postgres_schema, query, wait_until
from test_record_truth import TESTS
from test_report_browser import _need_chromium, browser  # noqa: F401 (a fixture)

WAIT_MS = 60_000  # the page updating by itself, on a busy machine


def statuses(cli, *task_ids):
    rows = dict(query(cli.events, "select task_id, status from tasks"))
    return [rows.get(t) for t in task_ids]


class Served:
    """A queue, its consumer, and the console serving it."""

    def __init__(self, cli, queue):
        self.cli, self.queue = cli, queue
        self.consumer = None
        self.browse = None
        self.url = self.root_url = None

    def produce(self, code):
        import subprocess
        import sys

        proc = subprocess.run(
            [sys.executable, "-c", "import console_app as a; " + code],
            cwd=self.cli.folder, env=self.cli.env, capture_output=True,
            text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split()

    def start_consumer(self, name="consumer"):
        self.consumer = self.cli.start(
            "consume", "--max-delay", "0.1", "--heartbeat-every", "0.5", "-w", "2",
            "--no-periodic", name=name)
        return self.consumer

    def serve(self):
        self.browse = self.cli.start("browse", "-p", "0", "--queue", self.queue,
                                     "--root", name="browse")
        line = wait_until(lambda: re.search(r"Log in as root: (\S+)",
                                            self.browse.stdout),
                          timeout=60, message="browse to print its root URL: "
                          + self.browse.describe())
        self.root_url = line.group(1)
        self.url = self.root_url.split("-/auth-token")[0]

    def now(self):
        with urllib.request.urlopen(self.url + "-/hueyscope/now.json", timeout=30) as r:
            return json.load(r)["now"]

    def task(self, task_id):
        with urllib.request.urlopen(self.url + "-/hueyscope/task/%s.json" % task_id,
                                    timeout=30) as r:
            return json.load(r)

    def failed(self, short):
        return sum(g["count"] for g in self.now()["failed"] if g["short"] == short)


def _folder(tmp_path_factory):
    cli = CLI(tmp_path_factory.mktemp("console-browser"))
    cli.env.update(PYTHONPATH=str(TESTS), HUEYSCOPE_APP="console_app:huey",
                   CONSOLE_DIR=str(cli.folder))
    return cli


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request, tmp_path_factory):
    _need_chromium()
    cli = _folder(tmp_path_factory)
    if request.param == "sqlite":
        yield from _serve(cli, str(cli.queue))
    else:
        with postgres_schema("hs_console_") as (_, _, url):
            cli.env["HUEYSCOPE_QUEUE"] = url
            yield from _serve(cli, url)


def _serve(cli, queue):
    served = Served(cli, queue)
    served.fixing = served.produce(
        "print(*[a.fails_until_fixed(n).id for n in range(3)])")
    served.hopeless = served.produce("print(*[a.always_fails().id for _ in range(4)])")
    served.start_consumer()
    wait_until(lambda: statuses(cli, *served.fixing, *served.hopeless)
               == ["failed"] * 7, timeout=90, message="the tasks to fail for good")
    served.serve()
    try:
        yield served
    finally:
        cli.close()


@pytest.fixture(scope="module")
def operator(browser, served):
    """A page logged in as root through the one-time URL browse printed."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(served.root_url)
    assert page.context.cookies()[0]["name"] in ("ds_actor", "ds_csrftoken")
    assert any(c["name"] == "ds_actor" for c in context.cookies())
    yield page
    context.close()


def _open_now(page, served):
    page.goto(served.url + "-/hueyscope")
    # Set once the page is loaded: a reload would lose it.
    page.evaluate("window.hsNotReloaded = true")


def _not_reloaded(page):
    assert page.evaluate("window.hsNotReloaded === true")


@pytest.mark.timeout(180)
def test_anonymous_sees_the_queue_without_buttons_and_a_forged_post_is_refused(
        browser, served):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(served.url + "-/hueyscope")
    assert page.locator("#hs-failed").is_visible()
    assert page.locator("tr.hs-failed-group").count() >= 1
    assert page.locator("form[method=post]").count() == 0
    assert page.locator("a.hs-retry-group, button").count() == 0
    before = served.now()["failed_total"]
    # A forged form post, and a script's post with the CSRF cookie as header.
    forged = page.request.post(served.url + "-/hueyscope/discard",
                               form={"task": "always_fails"})
    assert forged.status == 403
    status = page.evaluate("""async (url) => {
        const token = (document.cookie.match(/ds_csrftoken=([^;]+)/) || [])[1] || "";
        const r = await fetch(url, {method: "POST", headers: {
            "content-type": "application/json", "x-csrftoken": token},
            body: JSON.stringify({task: "always_fails"})});
        return r.status; }""", served.url + "-/hueyscope/discard")
    assert status == 403
    assert served.now()["failed_total"] == before
    context.close()


@pytest.mark.timeout(180)
def test_bulk_discard_by_fingerprint_touches_exactly_the_previewed_count(operator, served):
    page = operator
    _open_now(page, served)
    row = page.locator("tr.hs-failed-group", has_text="always_fails")
    fingerprint = row.get_attribute("data-fingerprint")
    others = served.failed("fails_until_fixed")
    page.select_option("#hs-bulk select[name=action]", "discard")
    page.fill("#hs-bulk input[name=fingerprint]", fingerprint)
    page.click("#hs-bulk button[type=submit]")
    previewed = int(page.locator("#hs-preview-count").get_attribute("data-count"))
    assert previewed == 4
    page.click("#hs-confirm button[type=submit]")
    page.wait_for_url(re.compile(r".*/-/hueyscope$"))
    assert "discard: 4 done" in page.content()
    assert served.failed("always_fails") == 0
    assert served.failed("fails_until_fixed") == others
    wait_until(lambda: len(query(served.cli.events, "select 1 from events where "
                                 "signal = 'discard' and error like '%asked by root'"))
               == previewed, message="each discard on record, naming root")


@pytest.mark.timeout(240)
def test_an_operator_retries_a_failed_group_and_watches_it_complete(operator, served):
    page = operator
    _open_now(page, served)
    (served.cli.folder / "fixed").write_text("")
    page.click("tr.hs-failed-group:has-text('fails_until_fixed') a.hs-retry-group")
    assert page.locator("#hs-preview-count").get_attribute("data-count") == "3"
    page.click("#hs-confirm button[type=submit]")
    page.wait_for_url(re.compile(r".*/-/hueyscope$"))
    page.evaluate("window.hsNotReloaded = true")
    for task_id in served.fixing:
        page.wait_for_selector('tr.hs-recent-row[data-task-id="%s"][data-status="complete"]'
                               % task_id, timeout=WAIT_MS)
    _not_reloaded(page)
    assert statuses(served.cli, *served.fixing) == ["complete"] * 3
    assert served.failed("fails_until_fixed") == 0


@pytest.mark.timeout(240)
def test_a_revoked_scheduled_task_never_runs_and_its_page_says_who(operator, served):
    # No consumer while it is revoked: nothing can run it before.
    assert served.consumer.stop() == 0
    [task_id] = served.produce("print(a.add.schedule((1, 2), delay=2).id)")
    page = operator
    wait_until(lambda: statuses(served.cli, task_id) == ["scheduled"]
               or statuses(served.cli, task_id) == ["enqueued"],
               message="the scheduled task on record")
    page.goto(served.url + "-/hueyscope/task/" + task_id)
    page.click("form[action$='/revoke'] button")
    page.wait_for_url(re.compile(r".*/-/hueyscope/task/.*"))
    served.start_consumer(name="consumer-2")
    wait_until(lambda: statuses(served.cli, task_id) == ["revoked"], timeout=90,
               message="the consumer to skip the revoked task")
    assert query(served.cli.events, "select count(*) from events e join tasks t on "
                 "e.task_seq = t.seq where t.task_id = ? and e.signal = 'executing'",
                 (task_id,)) == [(0,)]
    # The request is recorded by browse's own recorder, on its own time.
    wait_until(lambda: query(served.cli.events, "select 1 from events where "
                             "task_id = ? and signal = 'revoke'", (task_id,)),
               message="the revoke request on record")
    page.goto(served.url + "-/hueyscope/task/" + task_id)
    actions = page.locator("#hs-actions").inner_text()
    assert "revoke" in actions and "asked by root" in actions


@pytest.mark.timeout(240)
def test_a_killed_consumer_shows_dead_and_recover_puts_its_task_back(operator, served):
    page = operator
    [task_id] = served.produce("print(a.holds(1).id)")
    wait_until(lambda: (served.cli.folder / "held-1").exists(), timeout=90,
               message="the task to run")
    _open_now(page, served)
    pid = served.consumer.pid
    served.consumer.send_group(signal.SIGKILL)
    served.consumer.proc.wait(30)
    # The page updates by itself: the consumer dead, its task held by it.
    page.wait_for_selector('tr.hs-consumer[data-pid="%d"] .dead' % pid)
    page.wait_for_selector("tr.hs-running-row .dead")
    _not_reloaded(page)
    with urllib.request.urlopen("%s-/hueyscope/task/%s.json" % (served.url, task_id),
                                timeout=30) as r:
        lease = json.load(r)["lease"]
    assert lease["pid"] == pid and lease["alive"] is False
    page.click("a.hs-recover")
    assert page.locator("#hs-preview-count").get_attribute("data-count") == "1"
    page.click("#hs-confirm button[type=submit]")
    page.wait_for_url(re.compile(r".*/-/hueyscope$"))
    assert served.now()["pending"]["total"] == 1
    wait_until(lambda: query(served.cli.events, "select e.error from events e join "
                             "tasks t on e.task_seq = t.seq where t.task_id = ? and "
                             "e.signal = 'recovered'", (task_id,)),
               message="the recovery on record")
    [(reason,)] = query(served.cli.events, "select e.error from events e join tasks t "
                        "on e.task_seq = t.seq where t.task_id = ? and "
                        "e.signal = 'recovered'", (task_id,))
    assert "asked by root" in reason
    (served.cli.folder / "release").write_text("")
    served.start_consumer(name="consumer-3")
    wait_until(lambda: statuses(served.cli, task_id) == ["complete"], timeout=90,
               message="the recovered task to complete")


@pytest.mark.timeout(240)
def test_an_operator_watches_a_tasks_progress_and_cancels_it(operator, served):
    page = operator
    [task_id] = served.produce("print(a.reports(2).id)")
    _open_now(page, served)
    # The page updates by itself: the task running, half way.
    row = 'tr.hs-running-row[data-task-id="%s"]' % task_id
    page.wait_for_selector(row + " .hs-progress:has-text('50% half way')")
    _not_reloaded(page)
    page.click(row + " button.hs-cancel")
    page.wait_for_url(re.compile(r".*/-/hueyscope$"))
    assert "cancel: 1 done" in page.content()
    wait_until(lambda: statuses(served.cli, task_id) == ["canceled"], timeout=90,
               message="the task canceled on record")
    [(reason,)] = query(served.cli.events, "select e.error from events e join tasks t "
                        "on e.task_seq = t.seq where t.task_id = ? and "
                        "e.signal = 'canceled'", (task_id,))
    assert "canceled by hand, asked by root" in reason
    wait_until(lambda: query(served.cli.events, "select 1 from task_logs where "
                             "task_id = ?", (task_id,)), message="its log line")
    # No Cancel button once the task holds no lease, nor any request.
    wait_until(lambda: query(served.cli.events, "select 1 from events where "
                             "task_id = ? and signal = 'revoke'", (task_id,))
               and served.task(task_id)["lease"] is None,
               message="its lease released and the request on record")
    page.goto(served.url + "-/hueyscope/task/" + task_id)
    assert "50% half way" in page.locator("#hs-progress").inner_text()
    assert "waiting for released-2" in page.locator("#hs-logs").inner_text()
    assert "asked by root" in page.locator("#hs-actions").inner_text()
    assert page.locator("#hs-cancel").count() == 0
