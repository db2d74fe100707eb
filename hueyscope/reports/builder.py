"""Build the static report: SQL aggregation in SQLite, Jinja2 pages, atomic swap.

:func:`build_report` is the whole public API::

    from hueyscope.reports.builder import build_report
    index = build_report(["events.db"], "site", datasette_url=None)

The work is split by concern: :mod:`.store` opens (and merges) the event
stores, :mod:`.data` and :mod:`.timeline` compute what the pages show in
SQLite, :mod:`.format` turns values into text, :mod:`.charts` prepares the
charts and :mod:`.site` renders the pages and swaps the site in.
"""
import os
import shutil
import sqlite3
import sys
from pathlib import Path
from urllib.parse import urlparse

from hueyscope.events.schema import check_event_store
from hueyscope.filemodes import make_folder, mode_of
from hueyscope.readonly import QUERY_SECONDS
from hueyscope.reports.data import collect
from hueyscope.reports.format import slug
from hueyscope.reports.site import MARKER, Links, check_out, render, swap_in
from hueyscope.reports.store import Store

__all__ = ["build_report", "MARKER", "slug"]

# Caps on the number of pages: the build stays fast however many task names
# and runs the history holds.
MAX_TASK_PAGES = 500
MAX_RUN_PAGES = 200


class _Progress:
    """A click progress bar on stderr, a callback, or nothing."""

    def __init__(self, progress, total):
        self.bar = None
        self.callback = progress if callable(progress) else None
        self.total, self.done = total, 0
        if progress is True:
            import click
            self.bar = click.progressbar(length=total, label="Building report",
                                         file=sys.stderr)
            self.bar.__enter__()

    def step(self, n=1):
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        if self.callback is not None:
            self.callback(self.done, self.total)

    def close(self):
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


def validate_datasette_url(url):
    """The Datasette base URL, if any; an http(s) URL or a ValueError."""
    if url is None:
        return None
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("--datasette-url must be an http:// or https:// URL, "
                         "not %r" % url)
    return url


def build_report(sources, out, datasette_url=None, progress=False,
                 query_seconds=QUERY_SECONDS):
    """Render the report of the event stores ``sources`` into folder ``out``.

    Returns the path of index.html. Raises ValueError (one line) for a
    missing or foreign event store, a bad Datasette URL, or an ``out`` folder
    that is not a previous report. ``progress`` is True for a terminal
    progress bar, or a callable ``progress(done, total)``. A query running
    longer than ``query_seconds`` is stopped (a ValueError saying so).
    """
    sources = list(dict.fromkeys(str(s) for s in sources))
    if not sources:
        raise ValueError("no event store given")
    for path in sources:
        check_event_store(path, must_exist=True)
    datasette_url = validate_datasette_url(datasette_url)
    out = Path(out).absolute()
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)

    try:
        store = Store(sources, query_seconds)
    except sqlite3.Error as exc:
        raise ValueError("cannot read the event store: %s" % exc)
    # The site follows the umask (never forced wider); a rebuilt site keeps
    # the mode its owner gave the folder it replaces.
    tmp = Path(make_folder(out.parent, ".%s.new-" % out.name))
    keep = mode_of(out)
    bar = None
    try:
        links = Links(store, datasette_url)
        bar = _Progress(progress, 12)
        data = collect(store, bar)
        names = [s["task"] for s in sorted(
            data["summaries"].values(), key=lambda s: -s["total"])][:MAX_TASK_PAGES]
        links.task_pages = {n: "tasks/%s.html" % slug(n) for n in names}
        run_ids = [r["id"] for r in data["runs"]][:MAX_RUN_PAGES]
        links.run_pages = {r: "runs/%s.html" % slug(r) for r in run_ids}
        bar.total += len(names) + len(run_ids)
        render(store, data, links, names, run_ids, tmp, bar)
        (tmp / MARKER).write_text("written by hueyscope report\n")
        if keep is not None:
            os.chmod(tmp, keep)
        swap_in(tmp, out)
    except sqlite3.Error as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError("cannot read the event store: %s" % exc)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if bar is not None:
            bar.close()
        store.close()
    return out / "index.html"


