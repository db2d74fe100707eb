"""Help texts: what ``--help`` prints reads as plain text and tells the truth.

The help is read from real ``hueyscope ... --help`` processes; which options
a command declares is read from the click commands themselves.
"""
import re
from pathlib import Path

import click
import pytest

from conftest import run_cli
from hueyscope.cli import COMMANDS, cli

CONFIGURATION = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def _command(name):
    return cli.get_command(click.Context(cli), name)


def _options(name):
    return [p for p in _command(name).params if isinstance(p, click.Option)]


@pytest.fixture(scope="module")
def helps(tmp_path_factory):
    """{command: the text of its --help} (the group's under '')."""
    folder = tmp_path_factory.mktemp("help")
    texts = {}
    for name in ("", *COMMANDS):
        result = run_cli([name, "--help"] if name else ["--help"], folder)
        assert result.returncode == 0, result.stderr
        texts[name] = result.stdout
    return texts


def test_the_command_list_shows_whole_summaries(helps):
    listed = helps[""].split("Commands:", 1)[1].strip().splitlines()
    assert [line.split()[0] for line in listed] == list(COMMANDS)
    for line in listed:
        assert not line.rstrip().endswith("..."), line
        assert line.rstrip().endswith("."), line


@pytest.mark.parametrize("name", ["", *COMMANDS])
def test_help_has_no_rst_markup(helps, name):
    assert "``" not in helps[name]
    assert ":func:" not in helps[name] and ":class:" not in helps[name]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_option_says_what_it_does(name):
    for option in _options(name):
        assert option.help and option.help.strip(), (name, option.name)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_environment_variables_are_shown_one_way(helps, name):
    text = " ".join(helps[name].split())
    assert "Env:" not in text
    shown = set()
    for inside in re.findall(r"\[env var: ([^\]]*)\]", text):
        shown.update(re.findall(r"HUEYSCOPE_\w+", inside))
    assert set(re.findall(r"HUEYSCOPE_\w+", text)) == shown
    assert shown == {o.envvar for o in _options(name) if o.envvar}


def test_the_configuration_page_lists_every_environment_variable_one_way():
    text = CONFIGURATION.read_text()
    declared = {o.envvar for name in COMMANDS for o in _options(name) if o.envvar}
    table = {m for m in re.findall(r"^\| `--[^|]*\| `(HUEYSCOPE_\w+)` \|", text, re.M)}
    assert table == declared
    assert not re.search(r"HUEYSCOPE_\w+=", text)


@pytest.mark.parametrize("name,offered,not_offered", [
    ("produce", {"--queue", "--events", "--durability", "--delivery"}, {"--app"}),
    ("status", {"--queue", "--app", "--events"}, {"--durability", "--delivery"}),
    ("recover", {"--queue", "--events", "--durability", "--delivery", "--app"}, set()),
    ("consume", {"--queue", "--events", "--durability", "--delivery", "--app"}, set()),
])
def test_each_command_offers_the_settings_it_uses(helps, name, offered, not_offered):
    opts = {o for option in _options(name) for o in option.opts}
    assert offered <= opts and not (not_offered & opts)
    for option in not_offered:
        assert option not in helps[name]
