"""MkDocs hooks of the documentation site (mkdocs.yml names this file).

Two small things the configuration alone cannot say:

- the home page includes the README's overview and tour (pymdownx.snippets),
  found from the folder of mkdocs.yml rather than from wherever ``mkdocs``
  was started;
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


class HelpBlocksExtension(Extension):
    def extendMarkdown(self, md):
        # mkdocs-click expands its directive at priority 141: run just after.
        md.preprocessors.register(HelpBlocks(md), "click_help_blocks", 140)


def on_config(config):
    root = str(Path(config.config_file_path).resolve().parent)
    config.mdx_configs.setdefault("pymdownx.snippets", {})["base_path"] = [root]
    config.markdown_extensions.append(HelpBlocksExtension())
    return config
