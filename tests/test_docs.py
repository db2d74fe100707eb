"""The documentation site builds, documents every command, and stays offline.

The site is built by a real ``mkdocs build --strict`` process (warnings are
errors: a broken link or anchor, a page missing from the navigation, a
README part the home page includes that is gone), started from a folder
other than the repository, as ``mkdocs -f`` would be. Which commands the
reference must show is read from the click group itself.
"""
import html
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from hueyscope.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# An inline Markdown link's target: [text](target).
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _commands():
    """{name: click command} of the hueyscope group, in its own order."""
    ctx = click.Context(cli)
    return {name: cli.get_command(ctx, name) for name in cli.list_commands(ctx)}


def _relative_links(text):
    return [t for t in LINK.findall(text)
            if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def _sections(page):
    """{heading id: the HTML up to the next heading of the same page}."""
    parts = re.split(r'<h[1-6] id="([^"]+)"', page)
    return dict(zip(parts[1::2], parts[2::2]))


def _text(fragment):
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(the built site's folder, the finished build process)."""
    out = tmp_path_factory.mktemp("docs") / "site"
    elsewhere = tmp_path_factory.mktemp("cwd")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict",
         "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    return out, build


@pytest.mark.timeout(300)
def test_the_site_builds_with_warnings_as_errors(site):
    out, build = site
    assert build.returncode == 0, build.stdout + build.stderr
    assert "WARNING" not in build.stderr, build.stderr
    assert (out / "index.html").is_file()
    assert (out / "reference" / "index.html").is_file()


@pytest.mark.timeout(300)
def test_the_reference_shows_every_command_with_its_help_and_options(site):
    out, build = site
    assert build.returncode == 0, build.stderr
    sections = _sections((out / "reference" / "index.html").read_text())
    commands = _commands()
    shown = {i[len("hueyscope-"):] for i in sections if i.startswith("hueyscope-")}
    assert shown == set(commands)
    for name, command in commands.items():
        text = _text(sections["hueyscope-" + name])
        assert "hueyscope %s [OPTIONS]" % name in text, name
        assert inspect.cleandoc(command.help).splitlines()[0] in text, name
        for option in command.params:
            for opt in getattr(option, "opts", []) if isinstance(option, click.Option) else []:
                assert opt in text, (name, opt)


@pytest.mark.timeout(300)
def test_examples_in_a_commands_help_are_code_blocks(site):
    """Help is written for a terminal: an indented example under a label
    ("Examples:") must stay a block of its own, not run into the label."""
    out, build = site
    assert build.returncode == 0, build.stderr
    sections = _sections((out / "reference" / "index.html").read_text())
    checked = 0
    for name, command in _commands().items():
        blocks = [_text(b) for b in re.findall(r"<pre>(.*?)</pre>",
                                               sections["hueyscope-" + name], re.S)]
        for line in inspect.cleandoc(command.help).splitlines():
            if line.startswith("    "):
                assert any(line.strip() in block for block in blocks), (name, line)
                checked += 1
    assert checked > 0


@pytest.mark.timeout(300)
def test_the_site_loads_nothing_from_the_network(site):
    out, build = site
    assert build.returncode == 0, build.stderr
    remote = re.compile(r"<(?:script|link|img|iframe|source)\b[^>]*"
                        r"\b(?:src|href)=[\"'](?:https?:)?//", re.I)
    pages = list(out.rglob("*.html"))
    assert len(pages) > 10
    for page in pages:
        match = remote.search(page.read_text())
        assert match is None, (page, match and match.group(0))
    for sheet in out.rglob("*.css"):
        assert not re.search(r"@import\s+url\(\s*[\"']?https?:", sheet.read_text()), sheet


def test_every_relative_link_in_the_readme_leads_to_a_file():
    links = _relative_links(README.read_text())
    assert links
    for target in links:
        path = target.split("#", 1)[0]
        assert (ROOT / path).is_file(), target


@pytest.mark.timeout(300)
def test_the_readme_links_to_anchors_that_exist(site):
    out, build = site
    assert build.returncode == 0, build.stderr
    for target in _relative_links(README.read_text()):
        path, _, anchor = target.partition("#")
        if not anchor or not path.startswith("docs/"):
            continue
        page = out / Path(path[len("docs/"):]).with_suffix("") / "index.html"
        assert 'id="%s"' % anchor in page.read_text(), target
