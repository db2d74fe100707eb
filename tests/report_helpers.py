"""Reading a generated report back: headline numbers, tables and links.

A small html.parser walk, so tests check what a reader sees (the text of
``<dl class="stats">`` entries, table cells, every href and src) rather than
template internals.
"""
import html.parser
import json
import re
import shutil
import sqlite3
from pathlib import Path


class _Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.urls = []          # (tag, attribute, value)
        self.ids = set()
        self.stats = {}         # dt text -> first dd text
        self.tables = []        # list of rows, each a list of cell texts
        self._stack = []
        self._dt = None
        self._dd = None
        self._in_stats = 0
        self._cell = None
        self._row = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("href", "src", "action", "xlink:href", "poster", "data"):
            if attrs.get(name) is not None:
                self.urls.append((tag, name, attrs[name]))
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "dl" and "stats" in (attrs.get("class") or "").split():
            self._in_stats += 1
        if tag == "table":
            self.tables.append([])
        if tag == "tr" and self.tables:
            self._row = []
            self.tables[-1].append(self._row)
        if tag in ("td", "th") and self._row is not None:
            self._cell = []
        if self._in_stats and tag == "dt":
            self._dt = []
        if self._in_stats and tag == "dd" and self._dd is None and \
                "rate" not in (attrs.get("class") or ""):
            self._dd = []
        self._stack.append(tag)

    def handle_endtag(self, tag):
        if tag == "dl" and self._in_stats:
            self._in_stats -= 1
        if tag == "dt" and self._dt is not None:
            self._label = " ".join("".join(self._dt).split())
            self._dt = None
        if tag == "dd" and self._dd is not None:
            self.stats[self._label] = " ".join("".join(self._dd).split())
            self._dd = None
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        if tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._dt is not None:
            self._dt.append(data)
        if self._dd is not None:
            self._dd.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(path):
    page = _Page()
    page.feed(Path(path).read_text(encoding="utf-8"))
    return page


def as_int(text):
    """'1,234' -> 1234; '–' -> 0."""
    digits = re.sub(r"[^0-9]", "", text or "")
    return int(digits) if digits else 0


def table_with(page, header):
    """The first table whose header row contains ``header``: list of dicts."""
    for table in page.tables:
        if table and header in table[0]:
            head = table[0]
            return [dict(zip(head, row)) for row in table[1:] if len(row) == len(head)]
    raise AssertionError("no table with a %r column" % header)


def pages(site):
    return sorted(Path(site).rglob("*.html"))


def copy_store(src, dest):
    """A consistent copy of a (possibly live, WAL) event store."""
    source = sqlite3.connect("file:%s?mode=ro" % src, uri=True)
    target = sqlite3.connect(str(dest))
    with target:
        source.backup(target)
    source.close()
    target.close()
    return Path(dest)


def rows(path, sql, params=()):
    conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def remove(path):
    shutil.rmtree(path, ignore_errors=True)


_SPEC = re.compile(
    r'<div class="chart" id="chart-([\w-]+)"[^>]*>'
    r'<script type="application/json" class="chart-spec">(.*?)</script>', re.S)


def chart_specs(path):
    """The chart specs a page embeds, by chart id ('throughput', 'depth'...)."""
    text = Path(path).read_text(encoding="utf-8")
    return {m.group(1): json.loads(m.group(2)) for m in _SPEC.finditer(text)}


def trim_store(src, dest, keep):
    """A copy of the event store ``src`` with only the events ``keep`` (an
    SQL condition on events) selects; tasks, roll-ups and queue samples are
    cut to match, as if only those events had been recorded."""
    copy_store(src, dest)
    conn = sqlite3.connect(str(dest))
    with conn:
        conn.execute("delete from events where not (%s)" % keep)
        conn.execute("delete from tasks where task_id not in "
                     "(select task_id from events where task_id is not null)")
        conn.execute("delete from runs where id not in "
                     "(select run_id from events where run_id is not null)")
        conn.execute("delete from queue_samples where ts < (select min(ts) from "
                     "events) or ts > (select max(ts) from events)")
        _roll_up(conn)
    conn.close()
    return Path(dest)


def stretch_store(src, dest, days):
    """A copy of ``src`` whose tasks are spread back over ``days`` more days:
    each task's events move back a whole number of days (the task's number
    modulo ``days``), and the roll-ups are rebuilt. Months of history from a
    store of three days, in a fraction of a second."""
    copy_store(src, dest)
    conn = sqlite3.connect(str(dest))
    with conn:
        conn.execute("update events set ts = ts - 86400 * (task_seq %% %d) "
                     "where task_seq is not null" % days)
        _roll_up(conn)
    conn.close()
    return Path(dest)


def _roll_up(conn):
    """Rebuild the hourly roll-ups from the events, as the recorder keeps them."""
    conn.execute("delete from rollup_hourly")
    conn.execute(
        "insert into rollup_hourly (hour, task, signal, count, duration_sum, "
        "duration_max, wait_sum) select cast(ts / 3600 as integer) * 3600.0, "
        "task, signal, count(*), sum(duration), max(duration), sum(wait) "
        "from events group by 1, task, signal")
