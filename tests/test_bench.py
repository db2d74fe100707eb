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
    assert set(rows) == {"bare", "hueyscope", "contrib.stats", "naive"}
    assert rows["bare"] == "1.00"
    assert all(0 < float(ratio) < 5 for ratio in rows.values())
    # The recorder variant fails the run unless every event was written.
    capacity = re.findall(r"writer capacity: (\d+) events/s", result.stdout)
    assert len(capacity) == 2 and all(int(c) > 0 for c in capacity)


def test_bench_refuses_an_unknown_variant(cli):
    assert_one_line_error(cli.run("bench", "--variants", "bare,celery"))
