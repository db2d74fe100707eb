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
from hueyscope.settings import parse_duration, parse_retention

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
    (["status", "--workers", "2"], "No such option '--workers'"),
    (["browse", "--port", "70000"], "70000 is not in the range"),
    (["report", "--datasette-url", "ftp://x"], "must be an http:// or https:// URL"),
    (["bench", "--rounds", "0"], "0 is not in the range x>=1"),
    (["nosuchcommand"], "No such command 'nosuchcommand' (see hueyscope --help)"),
    (["produce", "mixed", {"HUEYSCOPE_DURABILITY": "fast"}], "HUEYSCOPE_DURABILITY"),
    (["consume", {"HUEYSCOPE_MAX_ARG_CHARS": "lots"}], "'lots' is not a whole number"),
    (["consume", {"HUEYSCOPE_RETENTION": "forever"}], "or none to keep everything"),
    (["recover", {"HUEYSCOPE_KEEP_FAILED": "3x"}], "'3x' is not a duration"),
    (["status", {"HUEYSCOPE_LEASE_TIMEOUT": "0.5"}], "0.5 is not in the range x>=1"),
    (["recover", "--max-recoveries", "-1"], "-1 is not in the range x>=0"),
    (["check", "--rules", "missing.toml"], "'missing.toml' does not exist"),
    (["report", {"HUEYSCOPE_DATASETTE_URL": "localhost"}],
     "must be an http:// or https:// URL"),
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


def test_every_variable_is_a_setting_with_one_option():
    """Each HUEYSCOPE_* variable the package reads is a Settings field, and
    its option is declared once, in hueyscope/options.py."""
    import re
    from pathlib import Path

    import hueyscope
    from hueyscope.options import SETTINGS_OPTIONS
    from hueyscope.settings import ENV, Settings

    package = Path(hueyscope.__file__).parent
    named, declared = set(), []
    for path in package.rglob("*.py"):
        text = path.read_text()
        named.update(re.findall(r"HUEYSCOPE_[A-Z_]+", text))
        if "envvar=" in text:
            declared.append(path.relative_to(package).as_posix())
    assert named <= set(ENV.values())
    assert declared == ["options.py"]
    fields = {f.name for f in __import__("dataclasses").fields(Settings)}
    assert set(ENV) == fields
    assert set(SETTINGS_OPTIONS) == fields - {"no_args", "max_arg_chars", "redact"}
    documented = (package.parent / "docs" / "configuration.md").read_text()
    assert [v for v in ENV.values() if "`%s`" % v not in documented] == []


@pytest.mark.parametrize("name,text,value", [
    ("lease_timeout", "5", 5.0),
    ("max_recoveries", "0", 0),
    ("keep_failed", "7d", 7 * 86400),
    ("retention", "none", None),
    ("retention", "12h", 12 * 3600),
    ("rules", "rules.toml", "rules.toml"),
    ("datasette_url", "http://localhost:8001", "http://localhost:8001"),
])
def test_a_setting_read_from_its_variable_goes_back_to_children(
        folder, monkeypatch, name, text, value):
    """A variable is read into its field, and export_env writes back a text
    that reads as the same value in a child."""
    from hueyscope.settings import ENV, Settings

    monkeypatch.setenv(ENV[name], text)
    settings = Settings.build(only=(name,))
    assert getattr(settings, name) == value
    settings.export_env()
    assert getattr(Settings.build(only=(name,)), name) == value
