"""No secret leaves a task in clear: the probe corpus through real processes.

A producer enqueues every probe of tests/secret_probes.py to a task that
completes and to one that fails for good with an error (and a cause)
quoting credentials; a real ``hueyscope consume`` runs them. Then every
file and output hueyscope makes of them is searched, as bytes, for every
secret: the event store with its WAL (while the consumer still writes, and
after), the report site, ``hueyscope failed`` (text and JSON), the
consumer's log, Datasette's pages (tables and canned queries), the metrics
and an alert mailed to a local SMTP sink. The queue itself keeps the messages whole, as huey needs
them to run the tasks.
"""
import json
import subprocess
import sys

import pytest

from browse_helpers import get
from conftest import query, wait_until
from secret_probes import CALLS, ORDINARY, SECRETS
from smtp_sink import SmtpSink
from hueyscope.browse.app import make_datasette
from test_record_truth import TESTS, consume


@pytest.fixture
def app(cli):
    cli.env.update(PYTHONPATH=str(TESTS), HUEYSCOPE_APP="secrets_app:huey")
    return cli


def leaks(data, where):
    """The secrets found in ``data`` (bytes), named with ``where``."""
    return ["%s in %s" % (s, where) for s in SECRETS if s.encode() in data]


def store_bytes(cli):
    return {p.name: p.read_bytes() for p in cli.folder.glob("events.db*")}


DATASETTE_PAGES = [
    "/events/tasks.json?_size=max", "/events/events.json?_size=max",
    "/events/tasks?_size=max", "/events/events?_size=max",
    "/events/recent_failures.json", "/events/failures_by_fingerprint.json",
    "/events/failures_by_fingerprint",
]


def datasette_leaks(events):
    """The secrets on Datasette's pages of the store: its tables as HTML and
    JSON, and the canned queries that show errors."""
    ds = make_datasette([str(events)])
    found = []
    for path in DATASETTE_PAGES:
        response = get(ds, path)
        assert response.status_code == 200, (path, response.status_code)
        found += leaks(response.content, "Datasette " + path)
    return found


def mailed_leaks(cli):
    """The secrets in the mail ``hueyscope check --notify`` sends (half the
    probes failed: the failure rate fires)."""
    with SmtpSink() as sink:
        result = cli.run("check", "--notify", "mailto://127.0.0.1:%d?from="
                         "hueyscope@example.com&to=ops@example.com&mode="
                         "insecure" % sink.port)
        assert result.returncode == 1, result.stdout + result.stderr
        assert sink.arrived.wait(20), result.stderr
    assert "failure_rate" in b"".join(sink.messages).decode("ascii", "replace")
    return leaks(b"".join(sink.messages), "the alert mail")


@pytest.mark.timeout(240)
def test_no_probe_secret_is_stored_shown_or_logged(app):
    producer = subprocess.run(
        [sys.executable, "-c", "import secrets_app; secrets_app.enqueue_all()"],
        cwd=app.folder, env=app.env, capture_output=True, text=True, timeout=60)
    assert producer.returncode == 0, producer.stderr
    ids = producer.stdout.split()
    assert len(ids) == 2 * len(CALLS) + 1
    consumer = consume(app)

    def finished():
        rows = dict(query(app.events, "select status, count(*) from tasks "
                          "group by status"))
        return rows.get("complete") == len(CALLS) + 1 and \
            rows.get("failed") == len(CALLS)

    wait_until(finished, timeout=90, message="every probe task finished")
    found = []
    # While the consumer runs, its WAL holds recent pages.
    for name, data in store_bytes(app).items():
        found += leaks(data, name)
    failed_text = app.run("failed")
    failed_json = app.run("failed", "--json")
    assert failed_text.returncode == failed_json.returncode == 0, failed_text.stderr
    entries = json.loads(failed_json.stdout)
    assert len(entries) == len(CALLS)
    found += leaks(failed_text.stdout.encode(), "hueyscope failed")
    found += leaks(failed_json.stdout.encode(), "hueyscope failed --json")
    consumer.stop()
    for name, data in store_bytes(app).items():
        found += leaks(data, name + " (stopped)")
    found += leaks(consumer.stderr.encode(), "the consumer's log")
    report = app.run("report")
    assert report.returncode == 0, report.stderr
    pages = [p for p in app.site.rglob("*") if p.is_file()]
    assert any(p.suffix == ".html" for p in pages)
    for page in pages:
        found += leaks(page.read_bytes(), page.relative_to(app.folder))
    found += datasette_leaks(app.events)
    metrics = app.run("metrics", "--textfile", str(app.folder / "m.prom"))
    assert metrics.returncode == 0, metrics.stderr
    found += leaks((app.folder / "m.prom").read_bytes(), "the metrics")
    found += mailed_leaks(app)
    assert found == []

    # Redacted, not emptied: what is not secret still reads, and the
    # credential's place says what it was.
    stored = b"".join(store_bytes(app).values()).decode("utf-8", "replace")
    for text in ORDINARY:
        assert text in stored, text
    error, = {e for e, in query(app.events, "select error from events "
                                "where signal = 'error'")}
    assert error == ("POST https://svc:***@api.example.com/v1 failed with "
                     "Authorization: Bearer ***")
    assert {e["reason"] for e in entries} == {"ConnectionError: " + error}
    # One fingerprint for the error, in the store and in the failed set.
    assert {e["fingerprint"] for e in entries} == {
        fp for fp, in query(app.events, "select distinct fingerprint from "
                            "events where signal = 'error'")}
    kwargs = {json.dumps(json.loads(k)) for k, in query(
        app.events, "select kwargs from events where task = 'carry' and "
        "signal = 'enqueued'")}
    assert json.dumps({"password": "***"}) in kwargs
    assert json.dumps({"token_count": 3}) in kwargs
