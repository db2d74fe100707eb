"""``hueyscope produce``: scenarios enqueued from their own processes."""
import signal

from conftest import query, scalar


def test_every_scenario_with_wait_against_a_consumer_process(cli):
    consumer = cli.start("consume", "--workers", "4", "--no-periodic",
                         "--max-delay", "0.2", name="consumer")
    producers = {name: cli.start("produce", name, "--wait", "--timeout", "60",
                                 name="produce-" + name)
                 for name in ("mixed", "flaky", "locks", "pipeline", "schedule")}
    for name, producer in producers.items():
        assert producer.wait(90) == 0, producer.describe()
    out = {name: p.stdout for name, p in producers.items()}
    assert out["mixed"].count("enqueued ") == 7
    assert "'pi_estimate'" in out["mixed"] and "slept=0.3" in out["mixed"]
    assert "{'status': 'OK', 'attempt': 3}" in out["flaky"]
    assert "failed for good: RuntimeError('transient failure (attempt 4)')" in out["flaky"]
    assert out["locks"].count("'tag': 'job-") == 3
    assert "7 -> 21 -> {'stored': 21}" in out["pipeline"]
    assert "result    quick_add(0, 100) in 2 s" in out["schedule"]
    assert "(revoked: never runs)" in out["schedule"]
    assert "(expired: never runs)" in out["schedule"]
    assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()
    # One producer run per process, each with its 'enqueued' events.
    assert scalar(cli.events, "select count(*) from runs where role = 'producer'") == 5
    runs = query(cli.events, "select id, pid, events_written, events_dropped, "
                 "stop_reason from runs where role = 'producer'")
    assert all(written for _, _, written, _, _ in runs), (runs, {
        name: p.stderr[-2000:] for name, p in producers.items()})


def test_load_shows_progress_and_waits_for_every_result(cli):
    consumer = cli.start("consume", "--workers", "2", "--no-periodic",
                         "--max-delay", "0.2", name="consumer")
    result = cli.run("produce", "load", "--count", "50", "--wait")
    assert result.returncode == 0, result.stderr
    assert "enqueueing" in result.stdout
    assert "enqueued 50 quick_add tasks" in result.stdout
    assert "50 results read, 0 missing" in result.stdout
    assert consumer.stop() == 0
    assert scalar(cli.events, "select count(*) from tasks where task = 'quick_add' "
                  "and status = 'complete'") == 50


def test_wait_without_a_consumer_times_out_with_exit_1(cli):
    result = cli.run("produce", "pipeline", "--wait", "--timeout", "0.3")
    assert result.returncode == 1
    assert "(no result in time)" in result.stdout
    # The task is still in the queue for a consumer to run later.
    assert "enqueued" in [r[0] for r in query(
        cli.events, "select status from tasks where task = 'fetch'")]


def test_count_repeats_a_scenario(cli):
    result = cli.run("produce", "flaky", "--count", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("enqueued ") == 6
    assert scalar(cli.events, "select count(*) from events where signal = 'enqueued'") == 6
