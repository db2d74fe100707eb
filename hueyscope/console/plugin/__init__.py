"""The hueyscope console: a Datasette plugin with the queue live and actions on it.

Loaded by ``hueyscope browse --queue Q`` and, through its ``datasette``
entry point, by plain ``datasette`` (the queue from the plugin's
configuration, ``plugins: hueyscope-console: queue: ...``, or
HUEYSCOPE_QUEUE). Pages:

- ``/-/hueyscope``: the queue now (``/-/hueyscope/now.json`` for scripts
  and for the page, which polls it);
- ``/-/hueyscope/task/ID``: one task from the event store (``.json`` too);
- ``/-/hueyscope/preview?action=...``: what an action would touch, with the
  form that does it.

Actions are POSTs to ``/-/hueyscope/ACTION`` (retry, discard, revoke,
restore, recover, cancel), from a form (with Datasette's CSRF token) or as JSON,
allowed to actors with the ``hueyscope-operate`` permission only.
"""
import json
import os
import urllib.parse

from datasette import hookimpl
from datasette.utils import actor_matches_allow
from datasette.utils.asgi import Forbidden, NotFound, Response

from hueyscope.console import history, live
from hueyscope.console.core import ACTIONS, BULK, OPERATE, Console, parse_params
from hueyscope.events.task_view import progress_text
from hueyscope.serving import access

CONFIG = "hueyscope-console"
BASE = "/-/hueyscope"
POLL_MS = 2000
SHOWN = 200  # entries listed on a preview page
PREVIEWED = BULK + ("recover", "cancel")
# Statuses of a task that may still be canceled (pending, scheduled or running).
CANCELABLE = ("enqueued", "scheduled", "executing", "retrying", "waiting")


def config(datasette):
    return datasette.plugin_config(CONFIG) or {}


def console(datasette):
    """The Console of ``datasette`` (None when no queue is configured)."""
    if not hasattr(datasette, "_hueyscope_console"):
        datasette._hueyscope_console = Console.from_config(config(datasette))
    return datasette._hueyscope_console


def store(datasette):
    """The Datasette database of the event store, or None."""
    c = console(datasette)
    names = [n for n in datasette.databases if not n.startswith("_")]
    if c is not None and c.store in datasette.databases:
        return datasette.databases[c.store]
    if c is not None:
        wanted = os.path.realpath(c.settings.events)
        for name in names:
            path = datasette.databases[name].path
            if path and os.path.realpath(path) == wanted:
                return datasette.databases[name]
    return datasette.databases[names[0]] if names else None


# -- who may act -----------------------------------------------------------

@hookimpl
def permission_allowed(datasette, actor, action, resource):
    """``hueyscope-operate``: root, the actors of ``browse --token-env``'s
    API tokens, or actors the configuration's ``allow`` matches.

    Anonymous never; anyone else only when an ``allow`` block (Datasette's
    syntax, e.g. ``{"id": ["alice"]}``) in the plugin configuration says so.
    """
    if action != OPERATE:
        return None
    if not actor:
        return False
    if actor.get("id") == "root":
        return True
    served = access(datasette)
    if actor.get("token") and served is not None \
            and actor.get("id") in served.tokens.actors:
        return True
    allow = config(datasette).get("allow")
    if allow is not None:
        return actor_matches_allow(actor, allow)
    return None


async def can_operate(datasette, request):
    return await datasette.permission_allowed(request.actor, OPERATE, default=False)


def actor_name(actor):
    return str(actor.get("id") or actor.get("username") or actor)


# -- pages -----------------------------------------------------------------

def _need_console(datasette):
    c = console(datasette)
    if c is None:
        raise NotFound("no queue configured for the hueyscope console "
                       "(hueyscope browse --queue, or HUEYSCOPE_QUEUE)")
    return c


async def _now(datasette):
    """The Now snapshot, with what the event store adds (ages, workers)."""
    c = _need_console(datasette)
    snap = await c.call(live.snapshot, c.settings.lease_timeout)
    db = store(datasette)
    snap["pending"]["oldest_enqueued"] = None
    snap["recent"] = []
    if db is not None:
        snap["recent"] = await history.recent(db)
        snap["pending"]["oldest_enqueued"] = await history.enqueued_at(
            db, snap["pending"]["oldest_id"])
        running = snap.get("running", [])
        found = await history.workers(db, [r["task_id"] for r in running[:50]])
        progress = await history.progress_of(db, [r["task_id"] for r in running[:50]])
        for item in running:
            item["worker"] = found.get(item["task_id"])
            item["progress"] = progress.get(item["task_id"])
    return snap


def iso(ts):
    """Unix seconds as ISO-8601 UTC to the second, as the browse pages show them."""
    import datetime

    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%SZ")


def _helpers(datasette):
    def ago(seconds):
        if seconds is None:
            return "-"
        seconds = max(0.0, float(seconds))
        if seconds < 120:
            return "%.1f s" % seconds
        if seconds < 7200:
            return "%.0f min" % (seconds / 60)
        return "%.1f h" % (seconds / 3600)

    def when(ts):
        return "-" if ts is None else iso(ts)

    def task_url(task_id):
        return datasette.urls.path("%s/task/%s" % (
            BASE, urllib.parse.quote(str(task_id), safe="")))

    def preview_url(action, **filters):
        query = {"action": action}
        query.update({k: v for k, v in filters.items() if v is not None})
        return datasette.urls.path(BASE + "/preview?" + urllib.parse.urlencode(query))

    db = store(datasette)

    def table_url(table, **params):
        """A table of the event store in Datasette, filtered (None without one)."""
        if db is None:
            return None
        url = datasette.urls.table(db.name, table)
        return url + ("?" + urllib.parse.urlencode(params) if params else "")

    return {"ago": ago, "when": when, "task_url": task_url,
            "progress_text": _progress_label,
            "preview_url": preview_url, "table_url": table_url,
            "base": datasette.urls.path(BASE)}


def _progress_label(item):
    """``42% step 3``; a value that is no number (a crafted store) as its message."""
    try:
        return progress_text(item)
    except (TypeError, ValueError):
        return str(item.get("message") or "")


async def _render(datasette, request, template, context):
    context = dict(_helpers(datasette), **context)
    context["can_operate"] = await can_operate(datasette, request)
    return await datasette.render_template(template, context, request=request)


async def now_page(datasette, request):
    snap = await _now(datasette)
    html = await _render(datasette, request, "hueyscope_now.html", {
        "snap": snap, "poll_ms": POLL_MS,
        "json_url": datasette.urls.path(BASE + "/now.json"),
        "queue_label": console(datasette).settings.queue})
    return Response.html(html)


async def now_json(datasette, request):
    """The snapshot as JSON, with the page's sections rendered (``html``)."""
    snap = await _now(datasette)
    html = await _render(datasette, request, "hueyscope_now_sections.html",
                         {"snap": snap})
    return Response.json({"now": snap, "html": html}, default=repr)


async def _task(datasette, task_id):
    c = _need_console(datasette)
    db = store(datasette)
    task = await history.task_row(db, task_id) if db is not None else None
    events = await history.events_of(db, task) if task else []
    lease = await c.call(live.lease_of, task_id, c.settings.lease_timeout)
    progress, logs = await history.told(db, task_id) if db is not None else (None, [])
    return {
        "task_id": task_id, "task": task, "events": events,
        "attempts": history.attempts(events),
        "arguments": history.arguments(events),
        "failures": history.failures(events),
        "actions": history.actions(events),
        "pipeline": await history.pipeline(db, task) if task else [],
        "lease": lease,
        "progress": progress, "logs": logs,
        "cancelable": lease is not None or (
            task is not None and task.get("status") in CANCELABLE),
    }


async def task_page(datasette, request):
    task_id = request.url_vars["task_id"]
    data = await _task(datasette, task_id)
    if request.url_vars.get("format") == "json":
        return Response.json(data, default=repr)
    if data["task"] is None and data["lease"] is None:
        raise NotFound("no task %s in the event store" % task_id)
    html = await _render(datasette, request, "hueyscope_task.html",
                         dict(data, pretty=history.pretty))
    return Response.html(html)


async def preview_page(datasette, request):
    """What an action would touch (its dry run), and the form that does it."""
    c = _need_console(datasette)
    # A dry run still takes the queue's write lock for a moment: operators only.
    if not await can_operate(datasette, request):
        raise Forbidden("a preview needs the %s permission" % OPERATE)
    action = request.args.get("action")
    if action not in PREVIEWED:
        raise NotFound("no preview for %r" % action)
    params = {key: request.args.get(key) for key in request.args.keys()}
    error, done = None, None
    try:
        parsed = parse_params(action, params)
        done = await c.call(c.act, action, parsed, None, dry_run=True)
    except ValueError as exc:
        error = str(exc)
    html = await _render(datasette, request, "hueyscope_preview.html", {
        "action": action, "done": done, "error": error, "shown": SHOWN,
        "filters": {k: v for k, v in params.items()
                    if k in ("task", "fingerprint", "kind", "since") and v},
        "ids": _previewed_ids(action, done)})
    return Response.html(html)


def _previewed_ids(action, done):
    """The ids a confirmed preview acts on: exactly what it listed."""
    if not done or action not in BULK + ("cancel",):
        return ""
    key = "task_id" if action == "cancel" else "id"
    return " ".join(str(e[key]) for e in done["touched"])


# -- actions ---------------------------------------------------------------

async def _body(request):
    """(values, as_json): a JSON body or a form's fields."""
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind == "application/json":
        try:
            values = json.loads((await request.post_body()) or b"{}")
        except ValueError:
            raise ValueError("the body is not JSON")
        if not isinstance(values, dict):
            raise ValueError("the body must be a JSON object")
        return values, True
    return dict(await request.post_vars()), False


async def act(datasette, request):
    """POST: run an action for an actor allowed to operate."""
    action = request.url_vars["action"]
    wants_json = request.headers.get("content-type", "").startswith("application/json")
    if request.method != "POST":
        return Response.text("POST only", status=405)
    if not await can_operate(datasette, request):
        message = ("%s needs the %s permission (log in as an operator)"
                   % (action, OPERATE))
        if wants_json:
            return Response.json({"ok": False, "error": message}, status=403)
        raise Forbidden(message)
    c = _need_console(datasette)
    try:
        values, as_json = await _body(request)
        dry_run = str(values.get("dry_run", "")).lower() in ("1", "true", "yes", "on")
        expected = values.get("expected")
        parsed = parse_params(action, values)
        done = await c.call(c.act, action, parsed, actor_name(request.actor),
                            dry_run=dry_run)
    except ValueError as exc:
        if wants_json:
            return Response.json({"ok": False, "error": str(exc)}, status=400)
        datasette.add_message(request, "%s: %s" % (action, exc), datasette.ERROR)
        return Response.redirect(datasette.urls.path(BASE))
    if as_json:
        return Response.json(dict(done, ok=True), default=repr)
    note = "%s: %d done" % (action, done["count"])
    if expected not in (None, "") and str(done["count"]) != str(expected):
        note += " (%s previewed)" % expected
    datasette.add_message(request, note, datasette.INFO)
    back = values.get("next") or ""
    if not back.startswith(BASE + "/task/"):
        back = BASE
    return Response.redirect(datasette.urls.path(back))


@hookimpl
def register_routes(datasette):
    return [
        (r"^/-/hueyscope$", now_page),
        (r"^/-/hueyscope/now\.json$", now_json),
        (r"^/-/hueyscope/task/(?P<task_id>[^/]+?)(\.(?P<format>json))?$", task_page),
        (r"^/-/hueyscope/preview$", preview_page),
        (r"^/-/hueyscope/(?P<action>%s)$" % "|".join(ACTIONS), act),
    ]


@hookimpl
def menu_links(datasette, actor):
    if console(datasette) is None:
        return []
    return [{"href": datasette.urls.path(BASE), "label": "hueyscope console"}]


@hookimpl
def render_cell(value, column, table, database, datasette):
    """Task ids in the event store link to their console page."""
    if column not in ("task_id", "parent_id") or not isinstance(value, str) \
            or not value or console(datasette) is None:
        return None
    from markupsafe import Markup, escape

    return Markup('<a href="{}">{}</a>').format(
        datasette.urls.path("%s/task/%s" % (BASE, urllib.parse.quote(value, safe=""))),
        escape(value))
