"""``python -m hueyscope``: the command line, with no script on PATH needed."""
from hueyscope.cli import cli

cli(prog_name="hueyscope")
