"""Bad option values through click's CliRunner, in this process.

Only commands that refuse their input while parsing it: nothing starts, no
consumer, no server. Each answers one ``Error:`` line, exit code 2, and
leaves the folder as it was. (tests/test_bad_input.py runs the real
``hueyscope`` processes, with the cases that need them.)
"""
import os

import pytest
from click.testing import CliRunner

from hueyscope.alerts.rules import duration, fraction
from hueyscope.cli import cli
from hueyscope.events.retention import parse_duration, parse_retention

BAD = [
    (["consume", "--retention", "3x"], "'3x' is not a duration"),
    (["consume", "--heartbeat-every", "0"], "--heartbeat-every"),
    (["consume", "--report-every", "soon"], "'--report-every': 'soon' is not a number"),
    (["consume", "--workers", "0"], "0 is not in the range x>=1"),
    (["consume", "--worker-type", "fiber"], "'fiber' is not one of 'thread', 'process'"),
    (["consume", "--durability", "fast"], "'fast' is not one of 'full', 'normal'"),
    (["consume", "extra"], "unexpected extra argument (extra)"),
    (["prune", "--older-than", "3x"], "'3x' is not a duration"),
    (["prune", "--older-than", "0d"], "more than zero"),
    (["produce", "nope"], "Invalid value for 'SCENARIO': 'nope' is not one of"),
    (["produce", "load", "--count", "ten"], "'--count': 'ten' is not a whole number"),
    (["produce", "mixed", "--app", "os:path"],
     "No such option '--app' (see hueyscope produce --help)"),
    (["status", "--events", "x.db"], "No such option '--events'"),
    (["browse", "--port", "70000"], "70000 is not in the range"),
    (["report", "--datasette-url", "ftp://x"], "must be an http:// or https:// URL"),
    (["bench", "--rounds", "0"], "0 is not in the range x>=1"),
    (["nosuchcommand"], "No such command 'nosuchcommand' (see hueyscope --help)"),
    (["produce", "mixed", {"HUEYSCOPE_DURABILITY": "fast"}], "HUEYSCOPE_DURABILITY"),
    (["consume", {"HUEYSCOPE_MAX_ARG_CHARS": "lots"}], "'lots' is not a whole number"),
]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """An empty working folder; every HUEYSCOPE_* setting points into it."""
    for key in list(os.environ):
        if key.startswith("HUEYSCOPE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("args,message", BAD, ids=[
    " ".join(a for a in args if isinstance(a, str)) for args, _ in BAD])
def test_a_bad_value_is_one_error_line(folder, args, message):
    env = args[-1] if isinstance(args[-1], dict) else {}
    args = [a for a in args if isinstance(a, str)]
    result = CliRunner().invoke(cli, args, env=env, prog_name="hueyscope")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert message in lines[0]
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert list(folder.iterdir()) == []  # nothing created


@pytest.mark.parametrize("text,seconds", [
    ("90s", 90), ("15m", 900), ("12h", 43200), ("30d", 2592000), ("2w", 1209600),
    ("1.5h", 5400), ("2D", 172800),
])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds
    assert duration(text) == seconds


@pytest.mark.parametrize("text,message", [
    ("3x", "'3x' is not a duration: use a number and a unit"),
    ("", "'' is not a duration"),
    ("15", "'15' is not a duration"),
    ("0d", "duration must be more than zero, not '0d'"),
    ("-5m", "is not a duration"),
])
def test_bad_durations(text, message):
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert message in str(info.value)


@pytest.mark.parametrize("text,seconds", [("none", None), ("NONE", None), ("14d", 1209600)])
def test_retention(text, seconds):
    assert parse_retention(text) == seconds


def test_a_bad_retention_says_none_keeps_everything():
    with pytest.raises(ValueError, match="'forever' is not a duration.*; or none to keep"):
        parse_retention("forever")


@pytest.mark.parametrize("value,expected", [
    (0.1, 0.1), ("10%", 0.1), (" 25% ", 0.25), (1, 1.0), (0, 0.0),
])
def test_fractions(value, expected):
    assert fraction(value) == pytest.approx(expected)


@pytest.mark.parametrize("value,message", [
    ("ten%", "is not a percentage"), (1.5, "is not between 0 and 1"),
    (True, "is not a share"), ("0.1", "is not a share"),
])
def test_bad_fractions(value, message):
    with pytest.raises(ValueError, match=message):
        fraction(value)


@pytest.mark.parametrize("value,message", [
    (0, "more than zero"), (-3, "more than zero"), (True, "is not a duration"),
])
def test_bad_rule_durations(value, message):
    with pytest.raises(ValueError, match=message):
        duration(value)
