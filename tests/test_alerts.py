"""Alerts: ``hueyscope check`` and ``consume --check-every`` on real stores.

Each default rule fires on a store where its fault happened -- made by real
produce and consume processes where one can make it (a failing task, a
consumer killed mid-task, no consumer at all), or written with real SQL into
a real event store where the fault takes minutes to happen for real (a task
waiting for 10 minutes, a run silent for 5, a periodic tick missed) -- and
stays quiet on a healthy one. Exit codes come from real ``hueyscope check``
processes.
"""
import email
import email.policy
import html
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import assert_one_line_error, query, scalar, wait_until
from smtp_sink import SmtpSink
from hueyscope.events.schema import open_event_store

RULE_NAMES = ("oldest_pending", "failure_rate", "lost_task", "no_consumer",
              "missed_tick", "disk_free", "store_size")


def check(cli, *args, **env):
    """Run ``hueyscope check ARGS``; (exit code, {rule: its line}, result)."""
    result = cli.run("check", *args, **env)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    fired = {line.split(":", 1)[0]: line for line in lines}
    assert len(fired) == len(lines), result.stdout
    return result.returncode, fired, result


def write_rules(cli, text, name="rules.toml"):
    path = cli.folder / name
    path.write_text(text)
    return path


def start_consumer(cli, *args):
    return cli.start("consume", "--workers", "2", "--heartbeat-every", "0.5",
                     "--max-delay", "0.2", *args, name="consumer")


def wait_for_statuses(cli, consumer, expected, timeout=40):
    """Wait until the store's statuses of the produced (not periodic) tasks
    are exactly ``expected``."""
    def statuses():
        return dict(query(cli.events, "select status, count(*) from tasks "
                          "where task not like 'heartbeat%' group by status"))

    wait_until(lambda: statuses() == expected
               or consumer.proc.poll() is not None, timeout=timeout,
               message="task statuses %s" % expected)
    assert consumer.proc.poll() is None, consumer.describe()


# -- crafting a fault with real SQL ------------------------------------------

def crafted_store(cli, now=None, beat_age=1.0, started_age=600.0,
                  periodic=("heartbeat_minutely",)):
    """A real event store (real migrations) with one consumer run in it.

    The run started ``started_age`` seconds ago, declared ``periodic``, and
    last beat ``beat_age`` seconds ago. Returns the open sqlite_utils
    Database and the run id.
    """
    now = time.time() if now is None else now
    db = open_event_store(str(cli.events))
    run_id = "crafted:1:%d" % (now - started_age)
    db["runs"].insert({
        "id": run_id, "role": "consumer", "host": "crafted", "pid": 1,
        "started": now - started_age, "heartbeat": now - beat_age,
        "workers": 1, "worker_type": "thread",
        "periodic": json.dumps(list(periodic)),
    })
    return db, run_id


def add_task(db, task_id, status, ts, task="quick_add", run_id=None, **columns):
    db["tasks"].insert(dict({
        "task_id": task_id, "task": task, "queue": "hueyscope",
        "status": status, "enqueued": ts, "ready": ts, "updated": ts,
        "run_id": run_id}, **columns))


def add_event(db, signal_, task, ts, run_id, task_id="t"):
    db["events"].insert({"ts": ts, "run_id": run_id, "task": task,
                         "task_id": task_id, "signal": signal_})


# -- healthy -----------------------------------------------------------------

@pytest.mark.timeout(90)
def test_a_healthy_store_is_quiet_and_a_stopped_consumer_fires(cli):
    assert cli.run("produce", "mixed").returncode == 0
    consumer = start_consumer(cli)
    wait_for_statuses(cli, consumer, {"complete": 7})
    wait_until(lambda: scalar(cli.events, "select count(*) from runs where "
                              "role = 'consumer' and periodic is not null"),
               message="the consumer run recorded")

    code, fired, result = check(cli, "-v")
    assert (code, fired) == (0, {}), result.stdout + result.stderr
    quiet = [line for line in result.stderr.splitlines() if line.startswith("ok ")]
    assert [line.split()[1].rstrip(":") for line in quiet] == list(RULE_NAMES)
    finished = re.search(r"failure_rate: 0 of (\d+) task\(s\) finished", result.stderr)
    assert finished and int(finished.group(1)) >= 7, result.stderr
    assert "heartbeat_minutely" in result.stderr  # the periodic task was checked

    assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()
    code, fired, result = check(cli)
    assert code == 1 and set(fired) == {"no_consumer"}, result.stdout
    assert re.search(r"the newest, \S+, stopped \d+ s ago", fired["no_consumer"])


# -- each rule fires ---------------------------------------------------------

@pytest.mark.timeout(60)
def test_no_consumer_at_all_fires(cli):
    assert cli.run("produce", "pipeline").returncode == 0
    code, fired, result = check(cli)
    assert code == 1, result.stderr
    assert set(fired) == {"no_consumer"}
    assert "no consumer run on record" in fired["no_consumer"]


@pytest.mark.timeout(30)
def test_a_consumer_silent_for_five_minutes_fires(cli):
    db, run_id = crafted_store(cli, beat_age=300, periodic=())
    db.close()
    code, fired, _ = check(cli)
    assert (code, set(fired)) == (1, {"no_consumer"})
    assert "no consumer has sent a heartbeat in the last 1 min" in fired["no_consumer"]
    assert re.search(r"%s, last beat 5(\.\d)? min ago" % re.escape(run_id),
                     fired["no_consumer"])
    # Its own threshold: 10 minutes of silence are allowed.
    rules = write_rules(cli, '[no_consumer]\nthreshold = "10m"\n')
    assert check(cli, "--rules", rules)[:2] == (0, {})


@pytest.mark.timeout(30)
def test_a_task_pending_for_ten_minutes_fires(cli):
    now = time.time()
    db, run_id = crafted_store(cli, now=now, periodic=())
    add_task(db, "old", "enqueued", now - 600, task="slow_io")
    add_task(db, "new", "enqueued", now - 5)
    db.close()
    code, fired, _ = check(cli)
    assert (code, set(fired)) == (1, {"oldest_pending"})
    assert re.match(r"oldest_pending: task slow_io \(old\) has waited 10(\.\d)? min "
                    r"in the queue \(threshold 5 min\); 2 task\(s\) pending",
                    fired["oldest_pending"]), fired

    # The queue is read too: one holding no message has nothing pending.
    from huey import SqliteHuey

    storage = SqliteHuey("hueyscope", filename=str(cli.queue)).storage
    assert storage.queue_size() == 0
    code, fired, result = check(cli, "-v")
    assert (code, fired) == (0, {}), result.stdout
    assert "oldest_pending: the queue holds no task (the store still shows 2 " \
           "enqueued)" in result.stderr
    storage.enqueue(b"a message", 0)
    assert set(check(cli)[1]) == {"oldest_pending"}
    assert set(check(cli, "--queue", "postgresql://nowhere/db")[1]) == {"oldest_pending"}

    # A scheduled task is not pending before its eta.
    db = open_event_store(str(cli.events))
    db["tasks"].update("old", {"ready": now + 60})
    db.close()
    assert check(cli)[:2] == (0, {})


@pytest.mark.timeout(60)
def test_a_pending_task_fires_past_a_lowered_threshold(cli):
    """Real tasks, no consumer: quiet under a threshold they cannot have
    reached yet, firing once it is lowered below their wait. (The quiet
    check uses an hour, not a second: how long the machine takes between
    two steps must not decide the outcome.)"""
    assert cli.run("produce", "mixed").returncode == 0
    quiet = write_rules(cli, '[oldest_pending]\nthreshold = "1h"\n'
                             '[no_consumer]\nenabled = false\n',
                        name="quiet.toml")
    assert check(cli, "--rules", quiet)[:2] == (0, {})
    rules = write_rules(cli, '[oldest_pending]\nthreshold = 1\n'
                             '[no_consumer]\nenabled = false\n')

    def fired():
        code, lines, _ = check(cli, "--rules", rules)
        return code == 1 and lines.get("oldest_pending")

    line = wait_until(fired, timeout=20, interval=0.2, message="oldest_pending")
    assert "7 task(s) pending" in line and "(threshold 1 s)" in line


@pytest.mark.timeout(90)
def test_failing_tasks_fire_once_enough_finished(cli):
    assert cli.run("produce", "flaky").returncode == 0
    consumer = start_consumer(cli, "--no-periodic")
    wait_for_statuses(cli, consumer, {"complete": 1, "failed": 1})

    # 1 of 2 failed: 50 %, but 2 finished say too little at the defaults.
    code, fired, result = check(cli, "-v")
    assert (code, fired) == (0, {}), result.stdout
    assert "1 of 2 task(s) finished in the last 15 min failed (50 %; threshold " \
           "10 %, at least 10 finished)" in result.stderr

    rules = write_rules(cli, "[failure_rate]\nmin_finished = 2\n")
    code, fired, _ = check(cli, "--rules", rules)
    assert (code, set(fired)) == (1, {"failure_rate"})
    assert "(50 %; threshold 10 %, at least 2 finished)" in fired["failure_rate"]
    # A higher threshold, written as a share, lets 50 % pass.
    rules = write_rules(cli, "[failure_rate]\nmin_finished = 2\nthreshold = 0.5\n")
    assert check(cli, "--rules", rules)[:2] == (0, {})
    consumer.stop(signal.SIGTERM)


@pytest.mark.timeout(90)
def test_a_consumer_killed_mid_task_leaves_a_lost_task(cli):
    assert cli.run("produce", "locks").returncode == 0
    consumer = start_consumer(cli)
    wait_until(lambda: cli.task_statuses().get("executing")
               or consumer.proc.poll() is not None, timeout=30,
               interval=0.02, message="a task executing")
    consumer.kill()  # SIGKILL to the whole group: no stop is recorded
    assert scalar(cli.events, "select count(*) from runs where stopped is null "
                  "and role = 'consumer'") == 1

    rules = write_rules(cli, '[lost_task]\nstale = "1s"\n'
                             '[no_consumer]\nenabled = false\n'
                             '[oldest_pending]\nenabled = false\n')

    def fired():
        code, lines, _ = check(cli, "--rules", rules)
        return code == 1 and lines.get("lost_task")

    line = wait_until(fired, timeout=20, interval=0.2, message="lost_task")
    assert re.match(r"lost_task: \d task\(s\) lost in the last 15 min: \d "
                    r"executing under a run that stopped or fell silent "
                    r"\(locked_sync_job under \S+\) \(threshold 0\)", line), line
    # At the defaults the run is not silent long enough yet (60 s).
    rules = write_rules(cli, '[no_consumer]\nenabled = false\n'
                             '[oldest_pending]\nenabled = false\n', "quiet.toml")
    assert check(cli, "--rules", rules)[:2] == (0, {})


@pytest.mark.timeout(30)
def test_lost_tasks_at_the_defaults(cli):
    now = time.time()
    db, live = crafted_store(cli, now=now, periodic=())
    db["runs"].insert({"id": "dead:2:1", "role": "consumer", "host": "dead",
                       "pid": 2, "started": now - 900, "heartbeat": now - 120})
    add_task(db, "orphan", "executing", now - 130, task="slow_io",
             run_id="dead:2:1", started=now - 125)
    add_event(db, "lost", "poison", now - 30, "dead:2:1", task_id="parked")
    # Lost long ago, before the window: not counted.
    db["runs"].insert({"id": "old:3:1", "role": "consumer", "host": "old",
                       "pid": 3, "started": now - 9000, "heartbeat": now - 8000})
    add_task(db, "ancient", "executing", now - 8100, run_id="old:3:1")
    db.close()
    code, fired, _ = check(cli)
    assert (code, set(fired)) == (1, {"lost_task"})
    assert fired["lost_task"] == (
        "lost_task: 2 task(s) lost in the last 15 min: 1 executing under a run "
        "that stopped or fell silent (slow_io under dead:2:1); 1 parked as "
        "lost (poison under dead:2:1) (threshold 0)")
    rules = write_rules(cli, "[lost_task]\nthreshold = 2\n")
    assert check(cli, "--rules", rules)[:2] == (0, {})


@pytest.mark.timeout(60)
def test_a_missed_periodic_tick_fires_and_a_served_one_does_not(cli):
    now = time.time()
    db, run_id = crafted_store(cli, now=now, started_age=600)
    # Served ten minutes ago, then never again: heartbeat_minutely is due
    # every minute.
    add_event(db, "enqueued", "heartbeat_minutely", now - 590, run_id)
    add_event(db, "executing", "heartbeat_minutely", now - 589, run_id)
    db.close()
    code, fired, _ = check(cli)
    assert (code, set(fired)) == (1, {"missed_tick"})
    # The last minute at least 2 min before the check (which ran a moment
    # after ``now``, perhaps in the next minute).
    due = {time.strftime("%Y-%m-%d %H:%M", time.gmtime(int(t - 120) // 60 * 60))
           for t in (now, time.time())}
    match = re.match(r"missed_tick: periodic task heartbeat_minutely was due "
                     r"at (\S+ \S+) UTC and nothing enqueued or ran it in the ",
                     fired["missed_tick"])
    assert match and match.group(1) in due, (fired, due)
    assert fired["missed_tick"].endswith("since (threshold 2 min)")

    # Enqueued since its last due tick: served.
    db = open_event_store(str(cli.events))
    add_event(db, "enqueued", "heartbeat_minutely", now - 30, run_id)
    db.close()
    assert check(cli)[:2] == (0, {})


@pytest.mark.timeout(30)
def test_a_tick_due_before_any_consumer_started_is_not_missed(cli):
    db, _ = crafted_store(cli, started_age=100)
    db.close()
    # Every tick due at least 2 min ago came before the run started.
    code, fired, result = check(cli, "-v")
    assert (code, fired) == (0, {}), result.stdout
    rules = write_rules(cli, '[missed_tick]\nthreshold = "1s"\n')
    code, fired, _ = check(cli, "--rules", rules)
    assert (code, set(fired)) == (1, {"missed_tick"})


# -- notifications -------------------------------------------------------------

class _Hook(http.server.BaseHTTPRequestHandler):
    received = None

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def hook():
    """A webhook on 127.0.0.1: (its port, the list of (path, JSON) it got)."""
    received = []
    handler = type("Hook", (_Hook,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], received
    server.shutdown()
    server.server_close()


@pytest.mark.timeout(60)
def test_notify_sends_each_firing_alert_through_apprise(cli, hook):
    port, received = hook
    db, _ = crafted_store(cli, beat_age=300, periodic=())
    add_task(db, "old", "enqueued", time.time() - 600)
    db.close()
    code, fired, result = check(
        cli, "--notify", "json://127.0.0.1:%d/hook" % port)
    assert code == 1 and set(fired) == {"oldest_pending", "no_consumer"}, result.stderr
    assert sorted((path, body["title"], body["message"]) for path, body in received) \
        == sorted(("/hook", "hueyscope alert: %s" % rule, line)
                  for rule, line in fired.items())

    # Nothing fires: nothing is sent.
    del received[:]
    rules = write_rules(cli, "[oldest_pending]\nenabled = false\n"
                             "[no_consumer]\nenabled = false\n")
    assert check(cli, "--rules", rules, "--notify",
                 "json://127.0.0.1:%d/hook" % port)[:2] == (0, {})
    assert received == []


HOSTILE = '<img src=x onerror="alert(1)">'


@pytest.mark.timeout(60)
@pytest.mark.parametrize("form", ["", "&format=html"])
def test_a_mailed_alert_carries_store_text_as_text(cli, form):
    """A task name with markup reaches a local SMTP sink as characters: the
    mail is text/plain, or, when HTML is asked for, escaped in it."""
    db, _ = crafted_store(cli, beat_age=1.0, periodic=())
    add_task(db, "old-1", "enqueued", time.time() - 600,
             task=HOSTILE + " token=tok-in-a-task-name")
    db.close()
    with SmtpSink() as sink:
        code, fired, result = check(
            cli, "--notify", "mailto://127.0.0.1:%d?from=hueyscope@example.com"
            "&to=ops@example.com&mode=insecure%s" % (sink.port, form))
        assert code == 1 and set(fired) == {"oldest_pending"}, result.stderr
        assert sink.arrived.wait(20), result.stderr
    (raw,) = sink.messages
    mail = email.message_from_bytes(raw, policy=email.policy.default)
    parts = {part.get_content_type(): part.get_content()
             for part in mail.walk() if not part.is_multipart()}
    assert "tok-in-a-task-name" not in raw.decode("ascii", "replace")
    if not form:
        assert set(parts) == {"text/plain"}
        assert HOSTILE + " token=***" in parts["text/plain"]
    else:
        markup = parts["text/html"]
        assert "<" not in markup and "&lt;img" in markup, markup
        assert HOSTILE + " token=***" in html.unescape(markup).replace("\xa0", " ")


# -- bad input -----------------------------------------------------------------

BAD_RULES = [
    ("[oldest_pending\nthreshold = 1\n", "is not valid TOML"),
    ("[slow_tasks]\nthreshold = 1\n", "unknown rule 'slow_tasks'"),
    ("[failure_rate]\nthreshhold = 0.2\n", "rule failure_rate has no setting 'threshhold'"),
    ('[oldest_pending]\nthreshold = "ten minutes"\n', "'ten minutes' is not a duration"),
    ("[oldest_pending]\nthreshold = -5\n", "duration must be more than zero"),
    ('[failure_rate]\nthreshold = "150%"\n', "is not between 0 and 1"),
    ("[failure_rate]\nmin_finished = 2.5\n", "2.5 is not a whole number"),
    ('[lost_task]\nenabled = "no"\n', "rule lost_task, enabled: 'no' is not true or false"),
    ("no_consumer = 5\n", "no_consumer must be a table"),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("text,message", BAD_RULES, ids=[
    "malformed", "unknown-rule", "unknown-key", "bad-duration",
    "negative-duration", "bad-share", "bad-count", "bad-enabled", "not-a-table"])
def test_a_bad_rules_file_is_one_line_exit_2(cli, text, message):
    db, _ = crafted_store(cli, beat_age=300)  # a store where alerts would fire
    db.close()
    rules = write_rules(cli, text)
    result = cli.run("check", "--rules", rules)
    assert_one_line_error(result)
    assert message in result.stderr and str(rules) in result.stderr
    assert result.stdout == ""


NO_APPRISE = ("import sys; sys.modules['apprise'] = None; "
              "from hueyscope.cli import cli; cli()")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", ["missing-store", "missing-rules-file",
                                  "not-a-store", "bad-notify-url",
                                  "bad-app", "no-apprise"])
def test_bad_input_is_one_line_exit_2(cli, case):
    if case != "missing-store":
        db, _ = crafted_store(cli, beat_age=300)
        db.close()
    if case == "missing-store":
        result, message = cli.run("check"), "no event store at"
        assert not cli.events.exists()
    elif case == "missing-rules-file":
        result, message = cli.run("check", "--rules", "nowhere.toml"), "nowhere.toml"
    elif case == "not-a-store":
        (cli.folder / "other.db").write_text("not sqlite")
        result = cli.run("check", "--events", "other.db")
        message = "is not a SQLite database"
    elif case == "bad-app":
        # Imported for the crontabs of the periodic task the run declared.
        result = cli.run("check", "--app", "no_such_module:huey")
        message = "cannot import no_such_module"
    elif case == "bad-notify-url":
        result = cli.run("check", "--notify", "nonsense://")
        message = "apprise does not understand 'nonsense://'"
    else:
        result = subprocess.run(
            [sys.executable, "-c", NO_APPRISE, "check", "--notify",
             "json://127.0.0.1:9/hook"], cwd=cli.folder, env=cli.env,
            capture_output=True, text=True, timeout=25)
        message = "--notify needs apprise, which is not installed: " \
                  "pip install 'hueyscope[alerts]'"
    assert_one_line_error(result)
    assert message in result.stderr
    assert result.stdout == ""


@pytest.mark.timeout(30)
def test_consume_refuses_a_bad_rules_file_before_starting(cli):
    rules = write_rules(cli, "[slow_tasks]\n")
    result = cli.run("consume", "--check-every", "1", "--rules", rules)
    assert_one_line_error(result)
    assert "unknown rule 'slow_tasks'" in result.stderr
    assert not cli.queue.exists()


# -- inside the consumer -----------------------------------------------------

@pytest.mark.timeout(150)
def test_consume_check_every_records_firing_alerts(cli):
    now = time.time()
    db, silent = crafted_store(cli, now=now, beat_age=200, periodic=())
    add_task(db, "orphan", "executing", now - 210, task="slow_io",
             run_id=silent, started=now - 205)
    db.close()
    consumer = start_consumer(cli, "--no-periodic", "--check-every", "1")

    def rows():
        return query(cli.events, "select rule, message, value, threshold, run_id "
                                 "from alerts order by id")

    wait_until(lambda: len(rows()) >= 2 or consumer.proc.poll() is not None,
               timeout=60, message="two checks recorded")
    assert consumer.proc.poll() is None, consumer.describe()
    found = rows()
    run_id = wait_until(lambda: scalar(
        cli.events, "select id from runs where host != 'crafted' and role = "
        "'consumer'"), message="the consumer's run on record")
    # The crafted run is silent: its task is lost. The consumer itself is
    # live, so no_consumer stays quiet, even at a first check that comes
    # before the consumer's own run reached the store.
    assert {r[0] for r in found} == {"lost_task"}, found
    rule, message, value, threshold, checked_by = found[0]
    assert (value, threshold, checked_by) == (1, 0, run_id)
    assert message.startswith("lost_task: 1 task(s) lost in the last 15 min")
    assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()
    assert "Alert lost_task: 1 task(s) lost" in consumer.stderr


@pytest.mark.timeout(60)
def test_a_check_inside_a_consumer_never_says_there_is_no_consumer(cli):
    """The consumer a check runs in is alive, on record yet or not."""
    import json as json_module

    from hueyscope.alerts.loop import check_and_record
    from hueyscope.alerts.rules import default_rules

    db, _ = crafted_store(cli, beat_age=600, periodic=())  # silent for 10 min
    db.close()
    rules = json_module.dumps(default_rules())
    outside = check_and_record(str(cli.events), rules)
    assert "no_consumer" in {a["rule"] for a in outside}
    inside = check_and_record(str(cli.events), rules, run_id="host:1:2")
    assert "no_consumer" not in {a["rule"] for a in inside}
    # What fired is on record, under the run that checked (or none).
    assert query(cli.events, "select run_id from alerts where rule = "
                 "'no_consumer'") == [(None,)]


def store_files_open(pid, events):
    """The event store's files (db, -wal, -shm) process ``pid`` has open or mapped."""
    names = {str(events) + tail for tail in ("", "-wal", "-shm")}
    found = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:  # closed meanwhile
            continue
        if target in names:
            found.add(target)
    with open("/proc/%d/maps" % pid) as maps:
        found.update(line.split()[-1] for line in maps
                     if line.split() and line.split()[-1] in names)
    return found


@pytest.mark.timeout(120)
def test_the_chores_leave_the_consumer_process_out_of_the_store(cli):
    """A consumer with process workers forks one whenever a worker dies; a
    fork while another of its threads is inside SQLite hands the new worker
    SQLite's mutexes locked. So its chores (report, alert checks,
    retention) read and write the store from child processes: the
    consumer's own process never has the store open while it runs."""
    now = time.time()
    db, silent = crafted_store(cli, now=now, beat_age=200, periodic=())
    add_task(db, "orphan", "executing", now - 210, task="slow_io",
             run_id=silent, started=now - 205)
    db.close()
    consumer = start_consumer(cli, "--no-periodic", "--worker-type", "process",
                              "--check-every", "1", "--report-every", "1",
                              "--retention", "1d")
    wait_until(lambda: "Huey consumer started" in consumer.stderr
               or consumer.proc.poll() is not None, timeout=60,
               message="the consumer to start")
    held = set()

    def chores_done():
        # Three checks recorded and three builds, each looked at meanwhile.
        held.update(store_files_open(consumer.pid, cli.events))
        return (consumer.proc.poll() is not None or (
            scalar(cli.events, "select count(*) from alerts") >= 3
            and consumer.stderr.count("Report rebuilt") >= 3
            and "Retention: deleted" in consumer.stderr))

    wait_until(chores_done, timeout=90, interval=0.01,
               message="three alert checks, three report builds and a prune")
    assert consumer.proc.poll() is None, consumer.describe()
    assert held == set()
    assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()


@pytest.mark.timeout(60)
def test_a_paused_backlog_is_neither_pending_too_long_nor_without_consumer(cli):
    """A paused task waits because it was asked to; a paused queue has no
    consumer on purpose (hueyscope pause writes hueyscope_paused)."""
    from hueyscope import SqliteHuey
    from hueyscope.queue import control

    now = time.time()
    db, _ = crafted_store(cli, now=now, beat_age=300, periodic=())
    add_task(db, "old", "enqueued", now - 600, task="slow_io")
    db.close()
    storage = SqliteHuey("hueyscope", filename=str(cli.queue)).storage
    storage.enqueue(b"a message", 0)
    assert set(check(cli)[1]) == {"oldest_pending", "no_consumer"}

    control.pause(storage, ["demo.slow_io"])
    code, fired, result = check(cli, "-v")
    assert set(fired) == {"no_consumer"}, result.stdout
    assert "oldest_pending: no task pending but those of paused tasks " \
           "(slow_io)" in result.stderr

    control.pause(storage, [control.ALL])
    code, fired, result = check(cli, "-v")
    assert (code, fired) == (0, {}), result.stdout
    assert "no_consumer: the queue is paused (hueyscope resume)" in result.stderr
    control.resume(storage, [control.ALL, "demo.slow_io"])
    assert set(check(cli)[1]) == {"oldest_pending", "no_consumer"}
