"""Alerts on disk space: the ``disk_free`` and ``store_size`` rules.

On real file systems: a small tmpfs mounted for the test (made full with a
real file) where the machine lets us mount one, and the disk the tests run
on, with thresholds set relative to what it really has free.
"""
import os
import re
import signal
import subprocess

import pytest

from conftest import assert_one_line_error, query, wait_until

MB = 10**6
SMALL_FS = 32 * 2**20  # bytes of the tmpfs


def check(cli, *args, **env):
    """``hueyscope check -v ARGS``: (exit code, {rule: line}, {rule: ok line})."""
    result = cli.run("check", "-v", *args, **env)
    assert "Traceback" not in result.stderr, result.stderr
    fired = {line.split(":", 1)[0]: line for line in result.stdout.splitlines()
             if line.strip()}
    quiet = {line[3:].split(":", 1)[0]: line[3:]
             for line in result.stderr.splitlines() if line.startswith("ok ")}
    return result.returncode, fired, quiet


def write_rules(cli, text):
    path = cli.folder / "rules.toml"
    path.write_text(text)
    return path


def free_bytes(folder):
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def fill(folder, leave):
    """A file in ``folder`` taking all but about ``leave`` bytes of its file
    system; returns its path."""
    path = os.path.join(folder, "filler")
    chunk = b"\0" * 2**20
    with open(path, "wb") as f:
        while free_bytes(folder) > leave + len(chunk):
            f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
    return path


@pytest.fixture
def small_fs(cli):
    """A 32 MiB tmpfs mounted in the test's folder; unmounted at the end,
    after the test's processes are killed."""
    mount = cli.folder / "small"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=%d" % SMALL_FS, "tmpfs", str(mount)],
        capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): %s"
                    % result.stderr.strip())
    try:
        yield mount
    finally:
        cli.close()
        subprocess.run(["umount", str(mount)], check=True, timeout=30)


def floor_of(line):
    """The floor in a disk_free line, as the text in the parentheses."""
    return re.search(r"whichever is more \(([^)]+)\)", line).group(1)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("on_small", ["events", "queue"])
def test_a_small_disk_fires_at_the_defaults(cli, small_fs, on_small):
    # 32 MiB is less than the 1 GB the rule keeps free, whatever the share.
    env = {"HUEYSCOPE_%s" % on_small.upper(): small_fs / ("%s.db" % on_small)}
    assert cli.run("produce", "mixed", **env).returncode == 0
    code, fired, quiet = check(cli, **env)
    assert code == 1 and "disk_free" in fired, fired
    what = "event store" if on_small == "events" else "queue"
    assert "on the file system of the %s (%s)" % (what, small_fs) \
        in fired["disk_free"]
    assert "of 33.6 MB" in fired["disk_free"]
    assert floor_of(fired["disk_free"]) == "1 GB"
    assert "store_size" in quiet


@pytest.mark.timeout(60)
def test_a_disk_filling_up_fires_below_its_share_and_stops_when_freed(
        cli, small_fs):
    env = {"HUEYSCOPE_EVENTS": small_fs / "events.db",
           "HUEYSCOPE_QUEUE": small_fs / "queue.db"}
    assert cli.run("produce", "mixed", **env).returncode == 0
    # On this small disk only the share counts: 10 % of 32 MiB.
    rules = write_rules(cli, '[disk_free]\nmin_free = "1MB"\n')
    code, fired, quiet = check(cli, "--rules", rules, **env)
    assert "disk_free" not in fired, fired
    assert "file system of the event store and queue (%s)" % small_fs \
        in quiet["disk_free"]
    assert floor_of(quiet["disk_free"]) == "3.36 MB"

    filler = fill(small_fs, leave=2 * MB)
    code, fired, quiet = check(cli, "--rules", rules, **env)
    assert code == 1 and "disk_free" in fired, quiet
    line = fired["disk_free"]
    free = float(re.match(r"disk_free: ([\d.]+) MB free", line).group(1))
    assert 1 < free < 3.36, line
    assert "the event store takes" in line

    os.unlink(filler)
    code, fired, quiet = check(cli, "--rules", rules, **env)
    assert "disk_free" not in fired and "disk_free" in quiet, fired


@pytest.mark.timeout(60)
def test_thresholds_relative_to_the_real_disk(cli):
    assert cli.run("produce", "mixed").returncode == 0
    free = free_bytes(cli.folder)
    store = os.path.getsize(cli.events)
    # Twice what is free is more than there is; half of it is less.
    rules = write_rules(cli, "[disk_free]\nthreshold = 0\nmin_free = %d\n"
                        "[store_size]\nthreshold = %d\n" % (2 * free, store // 2))
    code, fired, quiet = check(cli, "--rules", rules)
    assert code == 1 and {"disk_free", "store_size"} <= set(fired), quiet
    assert "on the file system of the event store and queue (%s)" % cli.folder \
        in fired["disk_free"]
    assert "a shorter --retention, then hueyscope prune --vacuum" \
        in fired["store_size"]

    rules = write_rules(cli, "[disk_free]\nthreshold = 0\nmin_free = %d\n"
                        "[store_size]\nthreshold = \"10GB\"\n" % (free // 2))
    code, fired, quiet = check(cli, "--rules", rules)
    assert not {"disk_free", "store_size"} & set(fired), fired
    assert "threshold 10 GB" in quiet["store_size"]


@pytest.mark.timeout(60)
def test_the_consumer_records_a_disk_alert(cli, small_fs):
    events = small_fs / "events.db"
    consumer = cli.start("consume", "--workers", "1", "--no-periodic",
                         "--max-delay", "0.2", "--check-every", "1",
                         name="consumer", HUEYSCOPE_EVENTS=events)

    def recorded():
        return query(events, "select rule, value, threshold from alerts "
                             "where rule = 'disk_free'")

    wait_until(lambda: recorded() or consumer.proc.poll() is not None,
               timeout=30, message="a disk_free alert recorded")
    assert consumer.proc.poll() is None, consumer.describe()
    rule, value, threshold = recorded()[0]
    assert 0 < value < SMALL_FS and threshold == 10**9
    assert consumer.stop(signal.SIGTERM) == 0, consumer.describe()
    assert "Alert disk_free:" in consumer.stderr


BAD_RULES = [
    ('[disk_free]\nmin_free = "lots"\n', "'lots' is not a size"),
    ('[disk_free]\nmin_free = "1 parsec"\n', "'1 parsec' is not a size"),
    ('[disk_free]\nthreshold = "150%"\n', "is not between 0 and 1"),
    ("[store_size]\nthreshold = -1\n", "size must be zero or more"),
    ("[store_size]\nthreshold = true\n", "True is not a size"),
    ("[store_size]\nlimit = 5\n", "rule store_size has no setting 'limit'"),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("text,message", BAD_RULES)
def test_a_bad_disk_rule_is_one_line_exit_2(cli, text, message):
    assert cli.run("produce", "mixed").returncode == 0
    rules = write_rules(cli, text)
    result = cli.run("check", "--rules", rules)
    assert_one_line_error(result)
    assert message in result.stderr and str(rules) in result.stderr


@pytest.mark.parametrize("text,expected", [
    (0, 0), (1500, 1500), ("1GB", 10**9), ("500MB", 5 * 10**8),
    ("1.5 GB", 15 * 10**8), ("2GiB", 2 * 2**30), ("64kib", 65536),
    ("10", 10), ("3TB", 3 * 10**12)])
def test_sizes_in_a_rules_file(text, expected):
    from hueyscope.alerts.rules import size

    assert size(text) == expected
