"""``hueyscope metrics``: what a scrape says equals what the stores hold.

Real processes throughout: event stores written by real ``hueyscope
produce`` and ``hueyscope consume`` processes, ``hueyscope metrics`` started
as a process and scraped over loopback, the exposition parsed with
prometheus-client's own parser. Every expected number is counted by SQL
straight from the files (the events table, not the roll-ups the metrics
read), or known from what was enqueued.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import \
    text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from conftest import assert_one_line_error, query, scalar, wait_until
from hueyscope.metrics.store import BUCKETS, METRICS, OUTCOMES, STATUSES

DASHBOARD = (Path(__file__).resolve().parent.parent / "hueyscope" / "metrics"
             / "grafana-dashboard.json")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(url, accept=None):
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=20) as response:
        return response.headers.get("Content-Type"), response.read().decode()


def samples(text):
    """{(sample name, sorted label items): value} of an exposition text."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples}


def values(parsed, name, **fixed):
    """{the labels not fixed, as a tuple of values: value} of one sample name."""
    out = {}
    for (sample, labels), value in parsed.items():
        labels = dict(labels)
        if sample != name or any(labels.get(k) != v for k, v in fixed.items()):
            continue
        rest = tuple(v for k, v in sorted(labels.items()) if k not in fixed)
        out[rest[0] if len(rest) == 1 else rest] = value
    return out


class Served:
    """A ``hueyscope metrics --serve`` process and its URL."""

    def __init__(self, cli, *args):
        self.port = free_port()
        self.proc = cli.start("metrics", "--serve", "127.0.0.1:%d" % self.port,
                              *args, name="metrics")
        self.url = "http://127.0.0.1:%d/metrics" % self.port
        wait_until(self._up, timeout=30, message="the metrics endpoint")

    def _up(self):
        assert self.proc.proc.poll() is None, self.proc.describe()
        try:
            return scrape(self.url)
        except (urllib.error.URLError, ConnectionError):
            return None

    def samples(self):
        return samples(scrape(self.url)[1])


@pytest.fixture(scope="module")
def recorded_metrics(recorded_store, tmp_path_factory):
    """(store path, parsed samples, exposition text) of one scrape of the
    recorded store, served next to its queue."""
    from conftest import CLI

    cli = CLI(tmp_path_factory.mktemp("metrics"))
    try:
        served = Served(cli, "--events", recorded_store,
                        "--queue", recorded_store.parent / "queue.db")
        text = scrape(served.url)[1]
        assert served.proc.stop(signal.SIGTERM) == 0, served.proc.describe()
        assert "Traceback" not in served.proc.stderr
    finally:
        cli.close()
    return recorded_store, samples(text), text


@pytest.mark.timeout(120)
def test_outcome_counters_equal_the_signals_recorded(recorded_metrics,
                                                     recorded_expected):
    store, parsed, _ = recorded_metrics
    counted = {}
    for task, signal_name, n in query(
            store, "select task, signal, count(*) from events group by 1, 2"):
        counted[(task, signal_name)] = n
    names = {task for task, _ in counted}
    for outcome in OUTCOMES:
        got = values(parsed, "hueyscope_task_outcomes_total", outcome=outcome)
        assert got == {t: counted.get((t, outcome), 0) for t in names}, outcome
    assert values(parsed, "messaging_client_sent_messages_total",
                  messaging_system="huey") == {
        t: counted.get((t, "enqueued"), 0) for t in names}
    assert values(parsed, "messaging_client_consumed_messages_total",
                  messaging_system="huey") == {
        t: counted.get((t, "executing"), 0) for t in names}
    # And what the workload is known to have done.
    outcomes = values(parsed, "hueyscope_task_outcomes_total")
    for signal_name, n in recorded_expected["signals"].items():
        if signal_name in OUTCOMES:
            assert sum(v for (o, _), v in outcomes.items()
                       if o == signal_name) == n, signal_name


@pytest.mark.timeout(120)
def test_task_status_gauges_equal_the_tasks_table(recorded_metrics,
                                                  recorded_expected):
    store, parsed, _ = recorded_metrics
    counted = {(task, status): n for task, status, n in query(
        store, "select task, status, count(*) from tasks group by 1, 2")}
    names = {task for task, _ in counted}
    got = values(parsed, "hueyscope_tasks")
    assert got == {(status, task): counted.get((task, status), 0)
                   for task in names for status in STATUSES}
    for status, n in recorded_expected["status"].items():
        assert sum(v for (s, _), v in got.items() if s == status) == n, status


@pytest.mark.timeout(120)
@pytest.mark.parametrize("metric,column", [
    ("messaging_process_duration_seconds", "duration"),
    ("hueyscope_queue_wait_seconds", "wait"),
])
def test_histograms_count_every_task_in_its_bucket(recorded_metrics, metric,
                                                   column):
    store, parsed, _ = recorded_metrics
    names = [t for t, in query(store, "select distinct task from tasks where "
                               "%s is not null" % column)]
    assert names
    buckets = values(parsed, metric + "_bucket")
    for task in names:
        for bound in BUCKETS:
            expected = scalar(store, "select count(*) from tasks where task = ? "
                              "and %s <= ?" % column, (task, bound))
            key = (repr(float(bound)), "huey", task) if column == "duration" \
                else (repr(float(bound)), task)
            assert buckets[key] == expected, (task, bound)
        total, seconds = query(store, "select count(*), sum(%s) from tasks "
                               "where task = ? and %s is not null"
                               % (column, column), (task,))[0]
        labels = dict(task=task, **({"messaging_system": "huey"}
                                    if column == "duration" else {}))
        assert values(parsed, metric + "_count", **labels) == {(): total}
        assert values(parsed, metric + "_sum", **labels) == {
            (): pytest.approx(seconds, rel=1e-9)}
        inf = (("+Inf", "huey", task) if column == "duration" else ("+Inf", task))
        assert buckets[inf] == total


@pytest.mark.timeout(120)
def test_runs_and_queue_of_a_stopped_consumer(recorded_metrics):
    store, parsed, _ = recorded_metrics
    host = socket.gethostname()
    # The consumer was stopped: none alive; nothing left on the queue.
    assert values(parsed, "hueyscope_consumers_alive") == {host: 0}
    assert values(parsed, "hueyscope_recorder_events_written_total") == {
        host: scalar(store, "select sum(events_written) from runs")}
    assert values(parsed, "hueyscope_recorder_events_dropped_total") == {host: 0}
    assert values(parsed, "hueyscope_queue_pending_tasks") == {"hueyscope": 0}
    assert values(parsed, "hueyscope_queue_scheduled_tasks") == {"hueyscope": 0}
    assert values(parsed, "hueyscope_queue_oldest_pending_age_seconds") == {
        "hueyscope": 0}
    assert values(parsed, "hueyscope_leases_held") == {}
    # The task that failed for good is kept in the failed set.
    assert query(store.parent / "queue.db", "select count(*) from "
                 "hueyscope_dead_letter where kind = 'failed'") == [(1,)]
    assert values(parsed, "hueyscope_failed_set_tasks") == {
        ("failed", "hueyscope"): 1, ("dropped", "hueyscope"): 0,
        ("lost", "hueyscope"): 0}
    assert values(parsed, "hueyscope_event_store_up") == {(): 1}
    assert values(parsed, "hueyscope_queue_up") == {(): 1}


@pytest.mark.timeout(120)
def test_every_documented_metric_is_served_with_its_type(recorded_metrics):
    _, _, text = recorded_metrics
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    for metric in METRICS:
        family = metric.name[:-len("_total")] if metric.type == "counter" \
            else metric.name
        assert types.get(family, types.get(metric.name)) == metric.type, metric.name
    page = (DASHBOARD.parent.parent.parent / "docs" / "metrics.md").read_text()
    for metric in METRICS:
        assert "| `%s` | %s |" % (metric.name, metric.type) in page, metric.name


@pytest.mark.timeout(120)
def test_a_live_consumer_holding_a_lease(cli):
    """Pending, scheduled, oldest pending, consumers alive and leases held,
    scraped while a consumer (paused with SIGSTOP, so nothing moves between
    the scrape and the count) runs one slow task with two more queued."""
    produce = subprocess.run(
        [sys.executable, "-c",
         "import time; from hueyscope.demo_tasks import slow_io\n"
         "print(time.time()); [slow_io(60) for _ in range(3)]\n"
         "slow_io.schedule((0.1,), delay=3600)"],
        cwd=cli.folder, env=cli.env, capture_output=True, text=True, timeout=60)
    assert produce.returncode == 0, produce.stderr
    enqueued_at = float(produce.stdout.split()[0])
    consumer = cli.start("consume", "-w", "1", "--no-periodic",
                         "--heartbeat-every", "0.5", "--max-delay", "0.1",
                         name="consumer")
    wait_until(lambda: scalar(cli.events, "select count(*) from tasks "
                              "where status = 'executing'") == 1
               and scalar(cli.queue, "select count(*) from hueyscope_lease") == 1,
               timeout=30, message="the consumer to run one task")
    os.killpg(consumer.pid, signal.SIGSTOP)
    try:
        parsed = Served(cli).samples()
    finally:
        os.killpg(consumer.pid, signal.SIGCONT)
    assert values(parsed, "hueyscope_queue_pending_tasks") == {"hueyscope": 2}
    assert values(parsed, "hueyscope_queue_scheduled_tasks") == {"hueyscope": 1}
    # huey enqueues a task with an eta like any other (its consumer moves it
    # to the schedule when dequeued): enqueued, but not ready for an hour.
    assert dict(query(cli.events, "select status, count(*) from tasks group "
                      "by status")) == {"enqueued": 3, "executing": 1}
    assert scalar(cli.events, "select count(*) from tasks where status = "
                  "'enqueued' and ready > ?", (enqueued_at + 3000,)) == 1
    assert values(parsed, "hueyscope_leases_held") == {"hueyscope": 1}
    assert values(parsed, "hueyscope_consumers_alive") == {socket.gethostname(): 1}
    oldest = values(parsed, "hueyscope_queue_oldest_pending_age_seconds")["hueyscope"]
    ready = scalar(cli.events, "select min(ready) from tasks where status = 'enqueued'")
    assert enqueued_at - 1 < ready < enqueued_at + 5
    assert 0 < oldest < 60
    assert values(parsed, "hueyscope_tasks", status="executing") == {"slow_io": 1}


def _folder_files(folder):
    return sorted(p.name for p in Path(folder).iterdir()
                  if not p.name.endswith((".out", ".err")))


@pytest.mark.timeout(120)
def test_textfile_is_written_once_and_parses(cli, recorded_store, recorded_metrics):
    out = cli.folder / "hueyscope.prom"
    beside = sorted(p.name for p in recorded_store.parent.iterdir())
    result = cli.run("metrics", "--textfile", out, "--events", recorded_store,
                     "--queue", recorded_store.parent / "queue.db")
    assert result.returncode == 0, result.stderr
    # Read without a trace: no -wal or -shm left beside the store or queue.
    assert sorted(p.name for p in recorded_store.parent.iterdir()) == beside
    written = samples(out.read_text())
    served = recorded_metrics[1]
    # The same numbers as over HTTP, but for the time the scrape took.
    drop = ("hueyscope_metrics_collect_seconds",)
    assert {k: v for k, v in written.items() if k[0] not in drop} == {
        k: v for k, v in served.items() if k[0] not in drop}
    assert _folder_files(cli.folder) == ["hueyscope.prom"]


@pytest.mark.timeout(120)
def test_textfile_every_is_replaced_atomically(cli, recorded_store):
    out = cli.folder / "hueyscope.prom"
    proc = cli.start("metrics", "--textfile", out, "--every", "0.1",
                     "--events", recorded_store, "--queue", "nothing.db")
    wait_until(out.exists, message="the first textfile")
    inodes = set()
    reads = 0

    def replaced_a_few_times():
        nonlocal reads
        assert proc.proc.poll() is None, proc.describe()
        inodes.add(os.stat(out).st_ino)
        text = out.read_text()
        reads += 1
        # Never a partial file: every read ends with the last family.
        assert text.rstrip().splitlines()[-1].startswith(
            "hueyscope_metrics_collect_seconds "), text[-200:]
        assert samples(text)
        return len(inodes) >= 4

    wait_until(replaced_a_few_times, timeout=30, interval=0.01,
               message="the textfile to be replaced")
    assert proc.stop(signal.SIGTERM) == 0, proc.describe()
    assert _folder_files(cli.folder) == ["hueyscope.prom"]
    # The queue file is missing: its metrics say so, the store's are there.
    parsed = samples(out.read_text())
    assert values(parsed, "hueyscope_queue_up") == {(): 0}
    assert values(parsed, "hueyscope_event_store_up") == {(): 1}


@pytest.mark.timeout(60)
def test_openmetrics_when_asked(recorded_store, cli):
    served = Served(cli, "--events", recorded_store)
    kind, text = scrape(served.url, accept="application/openmetrics-text")
    assert kind.startswith("application/openmetrics-text")
    assert text.rstrip().endswith("# EOF")
    names = {f.name for f in openmetrics_families(text)}
    assert "hueyscope_task_outcomes" in names


@pytest.fixture
def busy_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", ["busy port", "textfile in a missing folder",
                                  "textfile is a folder", "missing store",
                                  "no output", "every without textfile"])
def test_bad_input_is_one_line_and_creates_nothing(cli, recorded_store,
                                                   busy_port, case):
    store = recorded_store
    args = {
        "busy port": ["--serve", "127.0.0.1:%d" % busy_port, "--events", store,
                      "--textfile", "out.prom"],
        "textfile in a missing folder": ["--textfile", "no/such/dir/out.prom",
                                         "--events", store],
        "textfile is a folder": ["--textfile", ".", "--events", store],
        "missing store": ["--textfile", "out.prom", "--serve", "127.0.0.1:0"],
        "no output": ["--events", store],
        "every without textfile": ["--serve", "127.0.0.1:0", "--every", "1",
                                   "--events", store],
    }[case]
    before = _folder_files(cli.folder)
    result = cli.run("metrics", *args)
    assert_one_line_error(result)
    assert _folder_files(cli.folder) == before == []


@pytest.mark.timeout(60)
def test_the_dashboard_queries_only_metrics_that_exist(recorded_metrics):
    _, _, text = recorded_metrics
    dashboard = json.loads(DASHBOARD.read_text())
    exposed = set()
    for family in text_string_to_metric_families(text):
        exposed.add(family.name)
        exposed.update({"counter": [family.name + "_total"],
                        "histogram": [family.name + s for s in
                                      ("_bucket", "_count", "_sum")]}
                       .get(family.type, []))
    exprs = [target["expr"] for panel in dashboard["panels"]
             for target in panel.get("targets", [])]
    exprs += [variable["definition"] for variable in
              dashboard["templating"]["list"] if "definition" in variable]
    assert len(exprs) >= 8
    queried = set()
    for expr in exprs:
        # Metric names, not the label names of selectors and "by (...)".
        names_only = re.sub(r"\{[^}]*\}|\bby \([^)]*\)", "", expr)
        queried.update(re.findall(r"\b((?:hueyscope|messaging)_[a-z_]+)\b",
                                  names_only))
    assert queried and queried <= exposed, queried - exposed
    # Every metric family is on the dashboard.
    assert {m.name for m in METRICS} <= {
        re.sub(r"_(bucket|count|sum)$", "", q) for q in queried}


# -- leases and the failed set, on a SQLite and a PostgreSQL queue ----------

TESTS = Path(__file__).resolve().parent
POSTGRES = os.environ.get("HUEYSCOPE_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test")


@pytest.fixture
def sqlite_queue(cli):
    return cli, lambda sql: query(cli.queue, sql)


@pytest.fixture
def postgres_queue(cli):
    """``cli`` on a PostgreSQL queue in a schema of its own, dropped after."""
    import uuid

    from conftest import require_server

    psycopg = pytest.importorskip("psycopg")
    schema = "hs_metrics_" + uuid.uuid4().hex[:10]
    try:
        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        require_server("PostgreSQL", POSTGRES, exc)
    admin.execute("create schema %s" % schema)
    cli.env["HUEYSCOPE_QUEUE"] = "%s?options=-csearch_path%%3D%s" % (POSTGRES, schema)

    def sql(statement):
        admin.execute("set search_path = %s" % schema)
        return admin.execute(statement).fetchall()

    yield cli, sql
    cli.close()
    admin.execute("drop schema %s cascade" % schema)
    admin.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("queue", ["sqlite_queue", "postgres_queue"])
def test_leases_and_failed_set_are_the_queues_tables(request, queue):
    """A task the consumer does not have is parked (the failed set); a
    60 s task holds its lease while the metrics are scraped."""
    cli, sql = request.getfixturevalue(queue)
    cli.env.update(PYTHONPATH=str(TESTS), HUEYSCOPE_APP="ledger_app:huey",
                   LEDGER=str(cli.folder / "ledger.txt"))
    producer = subprocess.run(
        [sys.executable, "-c", "import ledger_app as a; "
         "a.only_in_the_producer(); a.work(1, seconds=60)"],
        cwd=cli.folder, env=dict(cli.env, LEDGER_EXTRA_TASK="1"),
        capture_output=True, text=True, timeout=60)
    assert producer.returncode == 0, producer.stderr
    cli.start("consume", "-w", "1", "--no-periodic", "--max-delay", "0.1",
              "--heartbeat-every", "0.5", name="consumer")
    wait_until(lambda: sql("select count(*) from hueyscope_lease") == [(1,)]
               and sql("select count(*) from hueyscope_dead_letter") == [(1,)]
               and scalar(cli.events, "select count(*) from events where "
                          "signal = 'dropped'") == 1
               # Leased first, then 'executing' recorded: wait for both.
               and scalar(cli.events, "select count(*) from tasks where "
                          "task like '%work' and status = 'executing'") == 1,
               timeout=60, message="one task leased and running, one parked")
    served = Served(cli)
    parsed = served.samples()
    assert values(parsed, "hueyscope_leases_held") == {"ledger": 1}
    assert values(parsed, "hueyscope_failed_set_tasks") == {
        ("dropped", "ledger"): 1, ("failed", "ledger"): 0, ("lost", "ledger"): 0}
    assert values(parsed, "hueyscope_queue_up") == {(): 1}
    # The dropped event names the task as its enqueue does: one series.
    dropped = {name: n for name, n in values(
        parsed, "hueyscope_task_outcomes_total", outcome="dropped").items() if n}
    assert dropped == {"only_in_the_producer": 1}
    assert values(parsed, "hueyscope_tasks", status="executing") == {
        "work": 1, "only_in_the_producer": 0}
    assert values(parsed, "hueyscope_tasks", status="dropped") == {
        "work": 0, "only_in_the_producer": 1}
    assert values(parsed, "hueyscope_queue_paused_tasks") == {}
    # A pause, and the messages it holds back.
    assert cli.run("pause", "--task", "work").returncode == 0
    producer = subprocess.run(
        [sys.executable, "-c", "import ledger_app as a; a.work(2); a.work(3)"],
        cwd=cli.folder, env=cli.env, capture_output=True, text=True, timeout=60)
    assert producer.returncode == 0, producer.stderr
    # Computed at most once per --min-interval: the next computation says so.
    wait_until(lambda: values(served.samples(), "hueyscope_queue_paused_tasks")
               == {("ledger", "ledger_app.work"): 2}, timeout=60,
               message="the pause in the metrics")


@pytest.mark.timeout(60)
def test_a_redis_queue_leaves_the_queue_metrics_out(cli, recorded_store):
    out = cli.folder / "hueyscope.prom"
    result = cli.run("metrics", "--textfile", out, "--events", recorded_store,
                     "--queue", "redis://127.0.0.1:1/0")
    assert result.returncode == 0, result.stderr
    names = {f.name for f in text_string_to_metric_families(out.read_text())}
    assert "hueyscope_task_outcomes" in names
    assert not names & {"hueyscope_leases_held", "hueyscope_failed_set_tasks",
                        "hueyscope_queue_up"}


# -- the endpoint: what it answers, to whom, how often ---------------------

def http_get(url, host=None, headers=None):
    """(status, body) of a GET, with ``host`` as the Host header if given."""
    headers = dict(headers or {}, **({"Host": host} if host else {}))
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.timeout(90)
def test_with_a_token_only_scrapes_that_send_it_are_answered(recorded_store, cli):
    from conftest import assert_one_line_error

    token = "scrape-token-0123456789abcdef"
    port = free_port()
    started = cli.start("metrics", "--events", recorded_store, "--serve",
                        "0.0.0.0:%d" % port, "--token-env", "SCRAPE_TOKEN",
                        name="metrics-token", SCRAPE_TOKEN=token)
    wait_until(lambda: "Serving metrics" in started.stdout
               or started.proc.poll() is not None, timeout=30,
               message="the metrics endpoint")
    assert started.proc.poll() is None, started.describe()
    url = "http://127.0.0.1:%d/metrics" % port
    for headers in ({}, {"Authorization": "Bearer " + token[:-1]},
                    {"Authorization": "Basic " + token}):
        status, text = http_get(url, headers=headers)
        assert status == 401 and "hueyscope_" not in text, headers
    status, text = http_get(url, headers={"Authorization": "Bearer " + token})
    assert status == 200 and "hueyscope_task_outcomes_total" in text
    # Guarded: no warning for the wildcard address.
    assert "Warning" not in started.stderr
    # A token without an endpoint, or a bad one: one line, exit 2.
    for args, env in ((["--textfile", str(cli.folder / "m.prom")], {"SCRAPE_TOKEN": token}),
                      (["--serve", "127.0.0.1:0"], {"SCRAPE_TOKEN": "short"}),
                      (["--serve", "127.0.0.1:0"], {})):
        result = cli.run("metrics", "--events", recorded_store, *args,
                         "--token-env", "SCRAPE_TOKEN", **env)
        assert_one_line_error(result)


@pytest.mark.timeout(90)
def test_serves_metrics_only_to_its_own_host_names(recorded_store, cli):
    served = Served(cli, "--events", recorded_store, "--min-interval", "600",
                    "--allow-host", "metrics.example.org")
    base = "http://127.0.0.1:%d" % served.port
    assert http_get(base + "/other")[0] == 404
    assert http_get(base + "/metrics/x")[0] == 404
    status, text = http_get(base + "/")
    assert status == 200 and "/metrics" in text
    # A page whose name was rebound to 127.0.0.1 sends its own name.
    for host in ("attacker.example", "attacker.example:%d" % served.port,
                 "127.0.0.1.nip.io"):
        status, text = http_get(base + "/metrics", host=host)
        assert status == 400, host
        assert "hueyscope_" not in text
    for host in ("127.0.0.1:%d" % served.port, "localhost",
                 "metrics.example.org:%d" % served.port):
        assert http_get(base + "/metrics", host=host)[0] == 200, host
    assert "Traceback" not in served.proc.stderr


@pytest.mark.timeout(90)
def test_concurrent_scrapes_share_one_computation(recorded_store, cli):
    """Scrapes within --min-interval, concurrent ones included, are one
    computation: the counter of computations says 1 in every answer."""
    import concurrent.futures

    served = Served(cli, "--events", recorded_store, "--min-interval", "600")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(lambda _: scrape(served.url)[1], range(8)))
    assert len(set(texts)) == 1
    assert values(samples(texts[0]), "hueyscope_metrics_computations_total") \
        == {(): 1}


@pytest.mark.timeout(90)
def test_a_computation_past_its_time_limit_is_503(recorded_store, cli):
    port = free_port()
    proc = cli.start("metrics", "--serve", "127.0.0.1:%d" % port, "--events",
                     recorded_store, "--time-limit", "0.000001", name="metrics")
    url = "http://127.0.0.1:%d" % port

    def answered():
        assert proc.proc.poll() is None, proc.describe()
        try:
            return http_get(url + "/metrics")
        except (urllib.error.URLError, ConnectionError):
            return None

    status, text = wait_until(answered, timeout=30, message="the endpoint")
    assert status == 503 and "longer than 1e-06 s" in text
    # Still serving; one line in the log, however many scrapes.
    assert http_get(url + "/metrics")[0] == 503
    assert http_get(url + "/")[0] == 200
    assert proc.stop(signal.SIGTERM) == 0, proc.describe()
    assert proc.stderr.count("longer than 1e-06 s") == 1, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.timeout(90)
def test_a_public_bind_warns_and_prints_its_address(recorded_store, cli):
    port = free_port()
    proc = cli.start("metrics", "--serve", "0.0.0.0:%d" % port, "--events",
                     recorded_store, name="metrics")
    wait_until(lambda: "Serving" in proc.stdout or proc.proc.poll() is not None,
               timeout=30, message="the server to start")
    assert "Serving metrics at http://0.0.0.0:%d/metrics" % port in proc.stdout, \
        proc.describe()
    assert "Warning: listening on 0.0.0.0" in proc.stderr
    base = "http://127.0.0.1:%d/metrics" % port
    assert http_get(base)[0] == 200
    assert http_get(base, host="attacker.example")[0] == 400
    assert proc.stop(signal.SIGTERM) == 0, proc.describe()


@pytest.mark.timeout(60)
def test_a_loopback_bind_does_not_warn(recorded_store, cli):
    served = Served(cli, "--events", recorded_store)
    assert "Warning" not in served.proc.stderr
    assert "Serving metrics at http://127.0.0.1:%d/metrics" % served.port \
        in served.proc.stdout
