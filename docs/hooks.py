"""MkDocs hooks of the documentation site (mkdocs.yml names this file).

What the configuration alone cannot say:

- the home page includes parts of the README (pymdownx.snippets), found from
  the folder of mkdocs.yml rather than from wherever ``mkdocs`` was started;
  the README links to ``docs/NAME.md``, which in the site is ``NAME.md``;
- the command reference is the click commands' own help (mkdocs-click),
  whose examples are written for a terminal: a label line such as
  ``Examples:`` followed by indented lines. Markdown would run those lines
  into the label's paragraph; a blank line between them makes them the code
  block they are in ``--help``.
"""
import re
from pathlib import Path

from markdown.extensions import Extension
from markdown.preprocessors import Preprocessor

# A README link into the docs folder: [text](docs/page.md#anchor).
README_LINK = re.compile(r"\]\(docs/([^)\s]+\.md(?:#[^)\s]*)?)\)")
# A line that introduces an indented block in click help: "Examples:".
LABEL = re.compile(r"^[A-Z][A-Za-z ]*:$")
FENCE = re.compile(r"^\s*(```|~~~)")


class HelpBlocks(Preprocessor):
    """Separates an indented block from the label line just above it."""

    def run(self, lines):
        out, fenced = [], False
        for line in lines:
            if FENCE.match(line):
                fenced = not fenced
            elif (not fenced and line.startswith("    ") and out
                    and LABEL.match(out[-1])):
                out.append("")
            out.append(line)
        return out


class ReadmeLinks(Preprocessor):
    """Points the included README's links into docs/ at the site's pages."""

    def run(self, lines):
        return [README_LINK.sub(r"](\1)", line) for line in lines]


class DocsExtension(Extension):
    def extendMarkdown(self, md):
        # mkdocs-click expands its directive at priority 141: run just after.
        md.preprocessors.register(HelpBlocks(md), "click_help_blocks", 140)
        # pymdownx.snippets includes the README at priority 32: run after it.
        md.preprocessors.register(ReadmeLinks(md), "readme_links", 31.5)


def on_config(config):
    root = str(Path(config.config_file_path).resolve().parent)
    config.mdx_configs.setdefault("pymdownx.snippets", {})["base_path"] = [root]
    config.markdown_extensions.append(DocsExtension())
    return config
