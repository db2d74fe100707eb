"""The one way the test apps write their ledgers.

Each line is one ``O_APPEND`` write, so lines from many processes never mix
and a SIGKILL leaves whole lines.
"""
import os


def read(path):
    """The ledger's lines, each split into its words; [] before the first."""
    try:
        with open(path) as f:
            return [tuple(line.split()) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def append(path, line):
    """Append ``line`` (a newline is added) to the file at ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
