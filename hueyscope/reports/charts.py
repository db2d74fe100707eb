"""Chart data for the report: what uPlot draws, decided in Python.

Each function returns a plain dict (a *spec*) that a page embeds as JSON and
``static/charts.js`` hands to uPlot, the charting library vendored in
``static/`` (see VENDORED.md); or None when there is nothing to draw. The
same spec fills the table of numbers under each chart, so the numbers are
on the page without JavaScript, in print, and for screen readers.

Python decides everything a reader checks against the data: the bucket of
each bar, the x range (whole buckets around the period: no point can fall
outside it), where the axis ticks go and what they say, and the label each
bar shows on hover. Tick and hover labels come from one formatter at the
resolution of the buckets (seconds for a 15 s run, days for a month), so
they always agree. uPlot draws, scales to the page width and shows the
values under the cursor.
"""
import datetime
import math

from hueyscope.reports.format import number, step_label
from hueyscope.reports.timeline import DAY

# At most this many spaces between ticks along the time axis (so TICKS + 1
# ticks), so labels never touch.
TICKS = 8
# Tick spacings beyond a day: 2 days, a week, 2 weeks, 4 weeks, ...
LONG_TICKS = tuple(DAY * d for d in (2, 7, 14, 28, 56, 112, 224, 448))
TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600,
              7200, 10800, 21600, 43200, DAY) + LONG_TICKS

# Series of the throughput charts: (key, name, colour), bottom to top. Each
# is the count of one signal: how an execution ended.
THROUGHPUT = (("completed", "completed", "ok"),
              ("errors", "errors", "bad"),
              ("locked", "locked out", "warn"))


def _utc(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)


def bucket_label(t, step):
    """The bucket starting at ``t``, at the resolution of ``step``.

    '2024-06-01 12:00:05–12:00:06' for seconds, '2024-06-01 12:00–12:15'
    for minutes and hours, '2024-06-01' for a day. The hover label of a bar
    and its row in the table of numbers.
    """
    start, end = _utc(t), _utc(t + step)
    if step >= DAY:
        if step == DAY:
            return start.strftime("%Y-%m-%d")
        return "%s–%s" % (start.strftime("%Y-%m-%d"),
                          _utc(t + step - DAY).strftime("%Y-%m-%d"))
    fmt = "%H:%M:%S" if step < 60 else "%H:%M"
    return "%s %s–%s" % (start.strftime("%Y-%m-%d"), start.strftime(fmt),
                         end.strftime(fmt))


def time_ticks(start, end, step):
    """[(t, label)]: ticks on bucket edges inside start..end, TICKS apart at most.

    The spacing is a multiple of the bucket; labels say seconds when the
    spacing is under a minute, hours and minutes under a day, otherwise the
    day. The date (or the year, for day ticks) is added under the first tick
    and wherever it changes.
    """
    span = end - start
    spacing = next((s for s in TICK_STEPS if s % step == 0 and span / s <= TICKS),
                   TICK_STEPS[-1])
    t = math.ceil(start / spacing) * spacing
    ticks, previous = [], None
    while t <= end:
        moment = _utc(t)
        if spacing < DAY:
            label = moment.strftime("%H:%M:%S" if spacing < 60 else "%H:%M")
            line2 = moment.strftime("%Y-%m-%d")
        else:
            label, line2 = moment.strftime("%m-%d"), moment.strftime("%Y")
        if line2 != previous:
            label += "\n" + line2
            previous = line2
        ticks.append((t, label))
        t += spacing
    return ticks


def nice_axis(value):
    """A round y-axis: (maximum, gridline step) covering ``value``.

    The step is 1, 2, 2.5 or 5 times a power of ten, chosen so that three or
    four gridlines span the data; counts get no fractional gridlines.
    """
    if not value or value <= 0:
        return 4, 1
    rough = value / 4
    magnitude = 10 ** math.floor(math.log10(rough))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10)
                if rough <= m * magnitude * (1 + 1e-9))
    if value >= 1 and step < 1:
        step = 1
    return step * math.ceil(value / step - 1e-9), step


def _y_ticks(top):
    y_max, y_step = nice_axis(top)
    count = int(round(y_max / y_step))
    return y_max, [round(y_step * i, 10) for i in range(count + 1)]


def _rows(labels, columns):
    """Table rows (label, values...) of the buckets where anything happened."""
    return [[label] + [c[i] for c in columns] for i, label in enumerate(labels)
            if any(c[i] for c in columns)]


def time_bars(timeline, title, y_label, series=THROUGHPUT):
    """Stacked bars over time, one per bucket: the throughput charts.

    ``timeline`` holds dense buckets (:class:`~.timeline.Timeline`);
    ``series`` is (key, name, colour) from the bottom of a stack to the top.
    """
    points, start, end, step = timeline
    if not points or not any(p[k] for p in points for k, _, _ in series):
        return None
    labels = [bucket_label(p["t"], step) for p in points]
    columns = [[p[key] or 0 for p in points] for key, _, _ in series]
    y_max, y_ticks = _y_ticks(max(sum(c[i] for c in columns)
                                  for i in range(len(points))))
    return {
        "kind": "bars", "stacked": True, "title": title,
        **_time_axis(timeline, labels, "bar"),
        "y_max": y_max, "y_ticks": y_ticks,
        "y_label": y_label,
        "series": [{"name": name, "colour": colour, "values": column}
                   for (_, name, colour), column in zip(series, columns)],
        "head": ["Time (UTC)"] + [name for _, name, _ in series],
        "rows": _rows(labels, columns),
    }


def _time_axis(timeline, labels, mark):
    """The x axis of a chart over ``timeline``: one ``mark`` per bucket.

    Marks are centred in their bucket; its edges are the ticks.
    """
    points, start, end, step = timeline
    return {"x": [p["t"] + step / 2 for p in points],
            "range": [start, end], "labels": labels,
            "ticks": time_ticks(start, end, step),
            "x_label": "Time (UTC), one %s per %s" % (mark, step_label(step))}


def depth_lines(timeline, title):
    """Queue depth: the average pending per bucket (filled) and its peak."""
    points, start, end, step = timeline
    if not points:
        return None
    labels = [bucket_label(p["t"], step) for p in points]
    average = [None if p["pending"] is None else round(p["pending"], 1)
               for p in points]
    peak = [p["peak"] for p in points]
    y_max, y_ticks = _y_ticks(max(v for v in peak if v is not None))
    return {
        "kind": "lines", "stacked": False, "title": title,
        **_time_axis(timeline, labels, "point"),
        "y_max": y_max, "y_ticks": y_ticks,
        "y_label": "Pending messages",
        "series": [{"name": "average pending", "colour": "accent",
                    "values": average, "fill": True},
                   {"name": "peak pending", "colour": "muted",
                    "values": peak, "dash": True}],
        "head": ["Time (UTC)", "average pending", "peak pending"],
        "rows": [[label, number(a), number(p)]
                 for label, a, p in zip(labels, average, peak) if p is not None],
    }


def histogram(buckets, title):
    """Run time histogram: (short label, count, range label) per bucket.

    Bar i fills i..i+1 on the x axis; the tick under its left edge is the
    bucket's lower bound, its hover label the whole range.
    """
    if not buckets or not any(b[1] for b in buckets):
        return None
    counts = [b[1] for b in buckets]
    y_max, y_ticks = _y_ticks(max(counts))
    ends = [b[2] for b in buckets]
    return {
        "kind": "bars", "stacked": False, "title": title,
        "x": [i + 0.5 for i in range(len(buckets))],
        "range": [0, len(buckets)], "labels": ends,
        "ticks": [(i, b[0]) for i, b in enumerate(buckets)],
        "y_max": y_max, "y_ticks": y_ticks,
        "x_label": "Run time (each bar starts at the time under it)",
        "y_label": "Tasks",
        "series": [{"name": "tasks", "colour": "accent", "values": counts}],
        "head": ["Run time", "tasks"],
        "rows": [[label, count] for label, count in zip(ends, counts)],
    }
