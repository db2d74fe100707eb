"""Writing the site: links between pages, Jinja2 rendering, the atomic swap.

The site is rendered into a temporary folder beside ``out`` and swapped in
with two renames, so a web server can keep serving the old site until the
new one is complete.
"""
import os
import shutil
import time
import uuid
from pathlib import Path
from urllib.parse import quote, urlencode

import jinja2
from markupsafe import Markup

from hueyscope.reports import charts
from hueyscope.reports.data import (histogram_pairs, recovered_by_run,
                                    task_details)
from hueyscope.reports.format import (bidi_visible, bidi_visible_in, iso,
                                      number, percent, plural, seconds,
                                      short_id, slug, step_label, tilde_encode)

HERE = Path(__file__).parent
# Marks a folder as ours, so a rebuild never replaces somebody else's folder.
MARKER = ".hueyscope-report"
# Copied into the site's static/ folder: the pages need nothing else, and
# nothing from the network (uPlot is vendored: see static/VENDORED.md).
STATIC = ("style.css", "charts.js", "uPlot.iife.min.js", "uPlot.min.css",
          "uPlot.LICENSE")


class Links:
    """Every URL a page prints: relative links to our pages, Datasette links.

    Page URLs are relative to the site root; templates prefix ``root``.
    Datasette URLs exist only when a base URL was given.
    """

    def __init__(self, store, base=None):
        self.store = store
        self.base = base.rstrip("/") if base else None
        self.task_pages = {}
        self.run_pages = {}

    def task(self, name):
        return self.task_pages.get(name)

    def run(self, run_id):
        return self.run_pages.get(run_id)

    def _ds(self, db, path, params=None):
        url = "%s/%s/%s" % (self.base, quote(db, safe=""), path)
        if params:
            url += "?" + urlencode(params)
        return url

    def ds_task_row(self, task_id):
        if not self.base or task_id is None:
            return None
        db = self.store.db_of("tasks", "task_id", task_id)
        return self._ds(db, "tasks/" + tilde_encode(task_id))

    def ds_task_history(self, task_id):
        if not self.base or task_id is None:
            return None
        db = self.store.db_of("tasks", "task_id", task_id)
        return self._ds(db, "task_history", {"task_id": task_id})

    def console_task(self, task_id):
        """The task's page in the console (``hueyscope browse --queue``)."""
        if not self.base or task_id is None:
            return None
        return "%s/-/hueyscope/task/%s" % (self.base, quote(task_id, safe=""))

    def ds_run_row(self, run_id):
        if not self.base or run_id is None:
            return None
        db = self.store.db_of("runs", "id", run_id)
        return self._ds(db, "runs/" + tilde_encode(run_id))

    def ds_table(self, table, **filters):
        """One link per database: rows of ``table`` matching the filters."""
        if not self.base:
            return []
        return [(db, self._ds(db, table, filters)) for db in self.store.names]

    def ds_query(self, name, **params):
        if not self.base:
            return []
        return [(db, self._ds(db, name, params or None)) for db in self.store.names]


def breakable_iso(ts):
    """ISO time that may wrap after its date, for tables with many times:
    the text is unchanged, the line can break after the 'T'."""
    return Markup(iso(ts).replace("T", "T<wbr>", 1))


def tojson(value, indent=None):
    """Jinja's ``tojson`` (escaped for a script block), bidi controls shown
    as escapes in the text it carries: the charts print it on the page."""
    return jinja2.utils.htmlsafe_json_dumps(
        bidi_visible_in(value), indent=indent, sort_keys=True)


def environment():
    """Jinja2 with autoescape, and the report's formatting as filters."""
    # Every printed value goes through bidi_visible: text from the store
    # cannot reorder what a reader sees around it.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, finalize=bidi_visible)
    env.filters.update(iso=iso, seconds=seconds, number=number, slug=slug,
                       plural=plural, short_id=short_id, step_label=step_label,
                       breakable_iso=breakable_iso, tojson=tojson)
    env.globals.update(percent=percent)
    return env


class Site:
    """Writes pages into a folder; knows each page's way back to the root."""

    def __init__(self, folder, env, common):
        self.folder = Path(folder)
        self.env = env
        self.common = common

    def write(self, path, template, **context):
        depth = path.count("/")
        target = self.folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        html = self.env.get_template(template).render(
            root="../" * depth, page=path, **self.common, **context)
        target.write_text(html, encoding="utf-8")


def check_out(out):
    """Refuse to replace anything that is not a previous report."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise ValueError("%s exists and is not a folder" % out)
        if any(out.iterdir()) and not (out / MARKER).exists():
            raise ValueError(
                "%s is not empty and was not written by hueyscope report: "
                "refusing to replace it" % out)


def swap_in(tmp, out, attempts=5):
    """Rename the old site away, the new one in, then delete the old one.

    Between the two renames ``out`` is missing for an instant; a web server
    serving it sees either the whole old site or the whole new one. Two
    builds racing (a consumer's periodic rebuild and a manual one) retry
    until one of them wins the last rename.
    """
    out = Path(out)
    olds = []
    try:
        for _ in range(attempts):
            if out.exists():
                old = out.parent / (".%s.old-%s" % (out.name, uuid.uuid4().hex[:8]))
                try:
                    os.rename(out, old)
                    olds.append(old)
                except FileNotFoundError:
                    pass  # another build moved it away first
            try:
                os.rename(tmp, out)
                return
            except OSError:
                if not out.exists():
                    raise
        raise OSError("%s kept being replaced by another build" % out)
    finally:
        for old in olds:
            shutil.rmtree(old, ignore_errors=True)


def index_charts(data):
    """The overview's chart specs: throughput and queue depth."""
    step = data["throughput"].step
    return {
        "throughput": charts.time_bars(
            data["throughput"], "Executions per %s" % step_label(step),
            "Executions per %s" % step_label(step)),
        "depth": charts.depth_lines(data["depth"], "Pending messages"),
    }


def task_charts(name, detail, summary):
    """A task page's chart specs: run time histogram and throughput."""
    step = detail["throughput"].step
    return {
        "histogram": charts.histogram(histogram_pairs(summary["buckets"]),
                                      "Run time histogram of %s" % name),
        "throughput": charts.time_bars(
            detail["throughput"], "Executions of %s per %s" % (
                name, step_label(step)), "Executions per %s" % step_label(step)),
    }


def render(store, data, links, names, run_ids, tmp, bar):
    """Write every page of the site into the folder ``tmp``."""
    env = environment()
    common = {
        "links": links, "period": data["period"], "generated": time.time(),
        "sources": store.names, "datasette": bool(links.base),
    }
    site = Site(tmp, env, common)
    summaries = data["summaries"]
    ordered = sorted(summaries.values(), key=lambda s: -s["total"])
    worst = sorted((s for s in ordered if s["failed"] or s["lost"] or s["retried"]),
                   key=lambda s: (-(s["failed"] + s["lost"]),
                                  -(s["failed"] / s["finished"] if s["finished"] else 0),
                                  -s["retried"]))[:10]
    site.write("index.html", "index.html", data=data, tasks=ordered, worst=worst,
               charts=index_charts(data))
    site.write("failures.html", "failures.html", data=data)
    site.write("retries.html", "retries.html", data=data, tasks=ordered)
    site.write("runs.html", "runs.html", data=data)
    site.write("locks.html", "locks.html", data=data)
    site.write("schedules.html", "schedules.html", data=data)
    site.write("pipelines.html", "pipelines.html", data=data)
    bar.step()
    lost_by_run = {}
    for row in data["lost"]:
        lost_by_run.setdefault(row["run_id"], []).append(row)
    # Task pages one at a time: each page's details are read, written and
    # dropped, so memory does not grow with the number of tasks.
    for name in names:
        detail = task_details(store, name, data["period"])
        site.write(links.task_pages[name], "task.html", data=data, name=name,
                   s=summaries[name], p=data["percentiles"].get(name, {}),
                   errors=data["errors_by_task"].get(name, []), detail=detail,
                   charts=task_charts(name, detail, summaries[name]))
        bar.step()
    recovered = recovered_by_run(store)
    runs = {r["id"]: r for r in data["runs"]}
    for run_id in run_ids:
        site.write(links.run_pages[run_id], "run.html", data=data,
                   run=runs[run_id], left=lost_by_run.get(run_id, []),
                   recovered=recovered.get(run_id, []))
        bar.step()
    static = tmp / "static"
    static.mkdir()
    for name in STATIC:
        shutil.copyfile(HERE / "static" / name, static / name)
