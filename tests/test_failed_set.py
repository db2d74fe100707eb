"""The failed set, retry and discard, revoke and restore: real consumers, real files.

tests/truth_app.py's ``fails_until_fixed`` fails for good (one retry) until
a file exists; ``always_fails`` never succeeds. Each test runs a real
``hueyscope consume`` on them and the commands as a user types them.
"""
import json

import pytest

from conftest import assert_one_line_error, query, scalar, wait_until
from test_record_truth import TESTS, consume, produce, statuses


@pytest.fixture
def app(cli):
    cli.env.update(PYTHONPATH=str(TESTS), HUEYSCOPE_APP="truth_app:huey",
                   TRUTH_COUNTER=str(cli.folder / "retries.txt"),
                   TRUTH_FIXED=str(cli.folder / "fixed.txt"))
    return cli


def failed(cli, *args):
    result = cli.run("failed", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.timeout(120)
def test_a_task_retried_from_the_failed_set_completes_with_both_series_on_record(app):
    fixable, hopeless = produce(
        app, "print(a.fails_until_fixed().id, a.always_fails().id)").stdout.split()
    consumer = consume(app)
    wait_until(lambda: statuses(app, fixable, hopeless) == ["failed", "failed"],
               message="both tasks to fail for good")
    entries = failed(app)
    assert sorted((e["task_id"], e["kind"], e["error_type"]) for e in entries) == sorted(
        [(fixable, "failed", "ValueError"), (hopeless, "failed", "ValueError")])
    # The fingerprint is the event store's: the report's group is this group.
    stored = dict(query(app.events, "select task_id, fingerprint from tasks"))
    assert {e["task_id"]: e["fingerprint"] for e in entries} == {
        fixable: stored[fixable], hopeless: stored[hopeless]}
    text = app.run("failed").stdout
    assert "hueyscope retry --fingerprint %s" % stored[fixable] in text

    dry = app.run("retry", "--task", "fails_until_fixed", "--dry-run")
    assert dry.returncode == 0 and "would retry" in dry.stdout
    assert len(failed(app)) == 2

    (app.folder / "fixed.txt").write_text("")
    again = app.run("retry", "--task", "fails_until_fixed")
    assert again.returncode == 0, again.stderr
    wait_until(lambda: statuses(app, fixable) == ["complete"],
               message="the retried task to complete")
    # In the order they happened (two processes record them, the consumer
    # and the retry command, each as fast as its writer goes).
    signals = [s for s, in query(app.events, "select signal from events where "
                                  "task_id = ? order by ts, id", (fixable,))]
    first_series = signals[:signals.index("requeued")]
    second_series = signals[signals.index("requeued") + 1:]
    assert first_series.count("executing") == 2 and first_series[-1] == "error"
    assert second_series == ["executing", "complete"]
    assert [e["task_id"] for e in failed(app)] == [hopeless]

    gone = app.run("discard", "--task", "always_fails")
    assert gone.returncode == 0, gone.stderr
    assert failed(app) == []
    assert consumer.stop() == 0

    # The report's failure page shows the command that retries each group.
    assert app.run("report").returncode == 0
    page = (app.site / "failures.html").read_text()
    assert "hueyscope retry --fingerprint %s" % stored[hopeless] in page


@pytest.mark.timeout(60)
def test_revoke_and_restore_by_name_are_recorded_and_obeyed(app):
    assert app.run("revoke", "--task", "add").returncode == 0
    skipped = produce(app, "print(a.add(1, 2).id)").stdout.strip()
    consumer = consume(app)
    wait_until(lambda: statuses(app, skipped) == ["revoked"],
               message="the revoked task to be skipped")
    restored = app.run("restore", "--task", "add")
    assert restored.returncode == 0, restored.stderr
    ran = produce(app, "print(a.add(3, 4).id)").stdout.strip()
    wait_until(lambda: statuses(app, ran) == ["complete"],
               message="the restored task to run")
    by_id = produce(app, "print(a.add.schedule((5, 6), delay=2).id)").stdout.strip()
    assert app.run("revoke", by_id).returncode == 0
    wait_until(lambda: statuses(app, by_id) == ["revoked"],
               message="the task revoked by id to be skipped")
    assert consumer.stop() == 0
    notes = query(app.events, "select signal, task_id, task from events "
                  "where signal in ('revoke', 'restore') order by id")
    assert notes == [("revoke", None, "truth_app.add"),
                     ("restore", None, "truth_app.add"),
                     ("revoke", by_id, None)]
    assert scalar(app.events, "select count(*) from tasks where task_id is null") == 0


@pytest.mark.parametrize("args, message", [
    (("retry", "4242"), "no failed-set entry 4242"),
    (("discard", "1", "2"), "no failed-set entries 1, 2"),
    (("retry",), "name the entries"),
    (("revoke",), "give task IDS or --task NAME"),
    (("revoke", "--task", "nope"), "no task 'nope'"),
    (("failed", "--since", "yesterday"), "yesterday"),
])
def test_bad_input_is_one_line(app, args, message):
    produce(app, "a.add(1, 1)")
    result = app.run(*args)
    assert_one_line_error(result)
    assert message in result.stderr


def test_an_at_most_once_queue_has_no_failed_set(app):
    app.env["HUEYSCOPE_DELIVERY"] = "at-most-once"
    produce(app, "a.add(1, 1)")
    result = app.run("failed")
    assert_one_line_error(result)
    assert "keeps no failed set" in result.stderr
