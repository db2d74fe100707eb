"""Build the Datasette instance that serves event stores.

:func:`make_datasette` is the one place where configuration enters: the
``hueyscope browse`` command and the tests both call it, so what is tested is
what users run.

Event stores are served in Datasette's normal, mutable mode. Immutable mode
(``datasette -i``) reads the main database file only and ignores the
write-ahead log, so tasks a running consumer has committed would look
missing. Mutable databases are still read through ``mode=ro`` connections,
and no writable canned query is configured, so browsing cannot change a store.

Every connection Datasette opens refuses the SQL functions that are unsafe
on input from a browser (:func:`hueyscope.readonly.deny_dangerous`), and no
extension is loaded. Requests go through :func:`guard` first: only the host
names the server was started for are answered, and a password, if one is
set, is asked for. ``/-/databases.json`` shows file names, not the
absolute paths of the stores.
"""
import datetime
import json
import os
import pathlib
import sqlite3

from datasette import hookimpl
from datasette.app import Datasette
from datasette.database import Database
from datasette.plugins import pm
from datasette.utils.asgi import Response
from markupsafe import Markup, escape

from hueyscope.browse.metadata import TIME_COLUMNS, build_metadata
from hueyscope.events.schema import check_event_store, database_names
from hueyscope.readonly import deny_dangerous, sqlite_uri
from hueyscope.serving import (Access, HostNames, access, basic_auth_ok,
                               is_loopback)

# Tuned for stores of millions of events on a small machine.
SETTINGS = {
    # Suggesting facets runs a GROUP BY per column on every table page.
    "suggest_facets": False,
    # The default facets (signal, task, status) scan an index of up to
    # millions of entries: give them time rather than a "timed out" badge.
    "facet_time_limit_ms": 1500,
    # Canned queries answer in milliseconds; users' own SQL over a whole
    # store may take seconds and should not be cut off at one.
    "sql_time_limit_ms": 10000,
    # Tracebacks and JSON arguments make long cells.
    "truncate_cells_html": 300,
}

# Five digits of year 2000 onwards: a float this big in a time column is a
# timestamp, not a count that happens to share a column name.
_EPOCH_2000 = 946684800


def internal_tables(path):
    """Tables of ``path`` nobody needs to browse: ours (``_...``) and FTS."""
    conn = sqlite3.connect(sqlite_uri(pathlib.Path(path).resolve(), "mode=ro"),
                           uri=True)
    try:
        rows = conn.execute(
            "select name, coalesce(sql, '') from sqlite_master where type = 'table'"
        ).fetchall()
    finally:
        conn.close()
    fts = [name for name, sql in rows if "using fts" in sql.lower()]
    return sorted(
        name for name, sql in rows
        if name.startswith("_")
        or name in fts
        or any(name.startswith(f + "_") for f in fts)
    )


def make_datasette(paths, settings=None, metadata=None, hosts=None,
                   password=None, console=None, tokens=None):
    """A Datasette serving each event store in ``paths``, read-only.

    Raises ValueError (one line) if a path is not an event store. ``settings``
    override :data:`SETTINGS`; ``metadata`` replaces the generated metadata
    (tests use it to check a configuration, users should not need it).
    ``hosts`` (a :class:`hueyscope.serving.HostNames`; default: loopback
    names only) are the Host headers answered; with ``password`` every
    request needs it (HTTP Basic, any user name). ``tokens`` (a
    :class:`hueyscope.serving.Tokens`) are API tokens: a request sending
    one acts as its actor, who may act in the console, and needs no
    password. ``console``: the
    configuration of the console plugin (:mod:`hueyscope.console.plugin`),
    e.g. ``{"queue": ..., "app": ...}``; without a queue there is no console.
    """
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("no event store given")
    for path in paths:
        check_event_store(path, must_exist=True)
    names = database_names(paths)
    if metadata is None:
        metadata = build_metadata(
            {name: internal_tables(path) for name, path in zip(names, paths)})
    metadata = dict(metadata, plugins=dict(metadata.get("plugins") or {}))
    metadata["plugins"]["hueyscope-console"] = dict(console or {"queue": None})
    # Before Datasette(): it builds its routes (and client) when created.
    _register_plugin()
    ds = Datasette(
        metadata=metadata,
        settings=dict(SETTINGS, **(settings or {})),
    )
    # Datasette adds an in-memory database when given no files: not ours.
    if "_memory" in ds.databases:
        ds.remove_database("_memory")
    for name, path in zip(names, paths):
        ds.add_database(StoreDatabase(ds, path=path, is_mutable=True), name=name)
    # Read by guard() at each request: Datasette builds its app (and the
    # wrappers around it) as it is created, before these are known.
    ds.hueyscope_access = Access(hosts or HostNames("127.0.0.1"), password,
                                 tokens)  # read through serving.access()
    return ds


class StoreDatabase(Database):
    """A Datasette database whose connections are read-only, by quoted URI.

    Datasette puts the path into a ``file:`` URI as it is: a ``#`` or ``?``
    in a file name would cut the name short (and open, even create, another
    file). Browsing never writes, so every connection, a "write" one
    included, is ``mode=ro``.
    """

    def connect(self, write=False):
        query = "mode=ro&nolock=1" if self.ds.nolock else "mode=ro"
        conn = sqlite3.connect(sqlite_uri(self.path, query), uri=True,
                               check_same_thread=False)
        self._all_file_connections.append(conn)
        return conn


@hookimpl
def actor_from_request(datasette, request):
    """The actor of a request with an API token (``Authorization: Bearer``)."""
    allowed = access(datasette)
    if allowed is None or not allowed.tokens:
        return None
    actor = allowed.tokens.actor(request.headers.get("authorization"))
    return {"id": actor, "token": True} if actor else None


def store_names(ds):
    """Names of the event stores ``ds`` serves (not Datasette's own)."""
    return [name for name in ds.databases if not name.startswith("_")]


def is_local(host):
    """True if ``host`` only accepts connections from this machine."""
    return is_loopback(host)


def _register_plugin():
    import sys

    module = sys.modules[__name__]
    if not pm.is_registered(module):
        pm.register(module, name="hueyscope")
    # The console, also registered by its entry point when installed.
    from hueyscope.console import plugin as console_plugin

    if not pm.is_registered(console_plugin) and \
            pm.get_plugin("hueyscope_console") is None:
        pm.register(console_plugin, name="hueyscope_console")


def iso(ts):
    """Unix seconds as ISO-8601 UTC, to the millisecond: 2024-05-01 12:00:00.250Z."""
    dt = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
    return dt.strftime("%Y-%m-%d %H:%M:%S.") + "%03dZ" % (dt.microsecond // 1000)


@hookimpl
def render_cell(value, column, database, datasette):
    """Show timestamps of event stores as ISO-8601 UTC (raw value on hover)."""
    # Cheap checks first: this runs for every cell of every page.
    if column not in TIME_COLUMNS or not isinstance(value, (int, float)) \
            or isinstance(value, bool) or value < _EPOCH_2000:
        return None
    config = datasette.plugin_config("hueyscope", database=database, fallback=False)
    if not config or column not in config.get("time_columns", ()):
        return None
    return Markup('<span class="hs-time" title="{}">{}</span>').format(
        escape(repr(value)), escape(iso(value)))


# Column descriptions as a compact, scrollable two-column list, so the rows
# stay above the fold; times on one line.
CSS = """
dl.column-descriptions {
  display: grid; grid-template-columns: max-content 1fr; gap: 0.15em 1.2em;
  font-size: 0.85em; max-height: 11em; overflow-y: auto;
  border-left: 3px solid #d0d7de; padding: 0.2em 0.8em; margin: 0.5em 0 1em;
}
dl.column-descriptions dt { font-weight: bold; margin: 0; }
dl.column-descriptions dd { margin: 0; color: #444; }
.hs-time { white-space: nowrap; }
"""
CSS_PATH = "/-/hueyscope.css"


async def _css(request):
    return Response(CSS, content_type="text/css; charset=utf-8")


def connected_databases(datasette):
    """Datasette's ``/-/databases.json`` with each store's file name as its
    path: where the stores live on the server is nobody's business."""
    listed = datasette._connected_databases()
    for entry in listed:
        if entry.get("path"):
            entry["path"] = os.path.basename(entry["path"])
    return listed


async def _databases(request, datasette):
    await datasette.ensure_permissions(request.actor, ["view-instance"])
    data = connected_databases(datasette)
    if request.url_vars.get("format"):
        return Response.json(data)
    return Response.html(await datasette.render_template(
        "show_json.html", {"filename": "databases.json",
                           "data_json": json.dumps(data, indent=4)},
        request=request))


@hookimpl
def register_routes():
    # Plugin routes come before Datasette's own: this one replaces its
    # /-/databases page.
    return [(r"^/-/hueyscope\.css$", _css),
            (r"^/-/databases(\.(?P<format>json))?$", _databases)]


@hookimpl
def prepare_connection(conn, database, datasette):
    """Every connection refuses fts3_tokenizer() and load_extension()."""
    deny_dangerous(conn)


@hookimpl
def asgi_wrapper(datasette):
    return lambda app: guard(app, datasette)


def guard(app, datasette):
    """``app`` answering only allowed Host headers (else 400) and, with a
    password set, only requests that give it (else 401)."""

    async def guarded(scope, receive, send):
        allowed = access(datasette)
        if scope["type"] != "http" or allowed is None:
            return await app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", ())}
        host = headers.get("host")
        if not allowed.hosts.allows(host):
            return await _plain(send, 400, allowed.hosts.refusal(host))
        given = headers.get("authorization")
        # A script with an API token needs no password as well.
        if allowed.password and not basic_auth_ok(given, allowed.password) \
                and allowed.tokens.actor(given) is None:
            return await _plain(send, 401, "A password is needed (any user name).\n",
                                [(b"www-authenticate",
                                  b'Basic realm="hueyscope browse", charset="UTF-8"')])
        return await app(scope, receive, send)

    return guarded


async def _plain(send, status, text, headers=()):
    body = text.encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store"), *headers]})
    await send({"type": "http.response.body", "body": body})


@hookimpl
def extra_css_urls(database, datasette):
    if database and datasette.plugin_config("hueyscope", database=database,
                                            fallback=False):
        return [datasette.urls.path(CSS_PATH)]
    return []
