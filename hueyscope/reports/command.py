"""``hueyscope report``: render the static HTML report of one or more event stores."""
import sys

import click

from hueyscope.options import BadInput, FloatRange, settings_options
from hueyscope.readonly import QUERY_SECONDS


@click.command(short_help="Render the static HTML report of event stores.")
@click.argument("event_stores", nargs=-1, metavar="[EVENTS_DB]...")
@settings_options(only=("events", "site", "datasette_url"))
@click.option("--query-timeout", type=FloatRange(min=0.1),
              default=QUERY_SECONDS, show_default=True, metavar="SECONDS",
              help="Stop with an error if one query runs longer than this "
                   "(each takes well under a second on a million events; a "
                   "crafted store could make one run for ever).")
@click.option("--quiet", "-q", is_flag=True,
              help="No progress bar, print only the path of index.html.")
def report(event_stores, settings, query_timeout, quiet):
    """Render a static HTML report of EVENTS_DB (default: the --events store).

    Give several event stores (one per host) to merge them into one report.
    The site is written to a temporary folder next to --out and swapped in
    when complete, so a web server can serve --out while it is rebuilt. It
    needs no server and no network: open index.html from disk.

    \b
        hueyscope report --out site/
        hueyscope report host-a.db host-b.db --out site/
        hueyscope report --out site/ --datasette-url http://localhost:8001
    """
    sources = list(event_stores) or [settings.events]
    from hueyscope.reports.builder import build_report

    try:
        index = build_report(sources, settings.site, datasette_url=settings.datasette_url or None,
                             progress=not quiet and sys.stderr.isatty(),
                             query_seconds=query_timeout)
    except OSError as exc:
        raise BadInput("cannot write the report to %s: %s" % (
            settings.site, exc.strerror or exc))
    click.echo(str(index))
