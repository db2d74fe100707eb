"""``hueyscope bench``: every variant runs, side by side, and the figures add up."""
import re

import pytest

from conftest import assert_one_line_error


@pytest.mark.timeout(120)
def test_bench_runs_every_variant_and_quotes_ratios(cli):
    result = cli.run("bench", "--tasks", "150", "--rounds", "2",
                     "--writer-events", "6000", timeout=110)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = dict(re.findall(r"^(\S+) +\d+ +(\d+\.\d\d)x", result.stdout, re.M))
    assert set(rows) == {"bare", "hueyscope", "leased", "contrib.stats", "naive"}
    assert rows["bare"] == "1.00"
    assert all(0 < float(ratio) < 5 for ratio in rows.values())
    # The recorder variant fails the run unless every event was written.
    capacity = re.findall(r"writer capacity: (\d+) events/s", result.stdout)
    assert len(capacity) == 2 and all(int(c) > 0 for c in capacity)


@pytest.mark.timeout(120)
def test_bench_counts_what_worker_processes_record(cli):
    """With process workers each worker records through a writer of its
    own; the run checks every event reached the store all the same."""
    result = cli.run("bench", "--tasks", "100", "--rounds", "1",
                     "--variants", "bare,hueyscope,leased", "--writer-events",
                     "0", "--worker-type", "process", timeout=110)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = re.findall(r"^(\S+) +\d+ +\d+\.\d\dx", result.stdout, re.M)
    assert rows == ["bare", "hueyscope", "leased"]


def test_bench_refuses_an_unknown_variant(cli):
    assert_one_line_error(cli.run("bench", "--variants", "bare,celery"))


@pytest.mark.timeout(180)
def test_bench_backends_drains_each_queue_engine_side_by_side(cli):
    """The same workload on SQLite, PostgreSQL and Redis, ratios to SQLite.

    Each run fails unless every task's result is stored, every event is
    written and (SQLite, PostgreSQL) no lease is left.
    """
    import psycopg
    import redis

    from hueyscope.bench import DEFAULT_POSTGRES, DEFAULT_REDIS
    from conftest import require_server

    for name, ping in (("PostgreSQL", lambda: psycopg.connect(
            DEFAULT_POSTGRES, connect_timeout=5).close()),
                       ("Redis", lambda: redis.Redis.from_url(DEFAULT_REDIS).ping())):
        try:
            ping()
        except Exception as exc:
            require_server(name, "its default URL", exc)
    result = cli.run("bench", "--tasks", "200", "--rounds", "2",
                     "--backends", "postgres,redis", timeout=170)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = dict(re.findall(r"^(\S+) +\d+ +(\d+\.\d\d)x", result.stdout, re.M))
    assert set(rows) == {"sqlite", "postgres", "redis"}
    assert rows["sqlite"] == "1.00"
    assert all(0 < float(ratio) < 20 for ratio in rows.values())


@pytest.mark.parametrize("args, message", [
    (("--backends", "sqlite,mysql"), "unknown backend(s) mysql"),
    (("--backends", "postgres", "--postgres-url", "postgresql://127.0.0.1:1/x"),
     "cannot reach postgres"),
    (("--backends", "redis", "--redis-url", "redis://127.0.0.1:1/0"),
     "cannot reach redis"),
])
def test_bench_backends_bad_input_is_one_line(cli, args, message):
    result = cli.run("bench", *args)
    assert_one_line_error(result)
    assert message in result.stderr


# A plain install has no peewee: contrib.stats is skipped, not a crash.
NO_PEEWEE = ("import sys; sys.modules['peewee'] = None; "
             "from hueyscope.cli import cli; cli()")


@pytest.mark.timeout(120)
def test_bench_without_peewee_skips_contrib_stats(cli):
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-c", NO_PEEWEE, "bench", "--tasks", "100", "--rounds",
         "1", "--writer-events", "0"], cwd=cli.folder, env=cli.env,
        capture_output=True, text=True, timeout=110)
    assert run.returncode == 0, run.stderr
    assert "contrib.stats: skipped, peewee is not installed" in run.stderr
    rows = dict(re.findall(r"^(\S+) +\d+ +(\d+\.\d\d)x", run.stdout, re.M))
    assert set(rows) == {"bare", "hueyscope", "leased", "naive"}
    asked = subprocess.run(
        [sys.executable, "-c", NO_PEEWEE, "bench", "--variants", "contrib.stats"],
        cwd=cli.folder, env=cli.env, capture_output=True, text=True, timeout=60)
    assert_one_line_error(asked)
    assert "needs peewee" in asked.stderr
