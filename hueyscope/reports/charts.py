"""Inline SVG charts, made in Python: no JavaScript, no external files.

Each function returns a :class:`markupsafe.Markup` string ready to drop into
a template. Every label that could come from the event store is escaped.
Charts use a fixed ``viewBox`` and ``width: 100%`` from the stylesheet, so
they scale to a phone and print as vectors. Bars carry a ``<title>`` so a
hover shows the exact value without any script.
"""
import datetime
import math

from markupsafe import Markup, escape

WIDTH, HEIGHT = 800, 220
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 14, 34


def _fmt(value):
    """Compact axis numbers: 950, 1.2k, 3.4M, 0.25."""
    if value is None:
        return ""
    if value >= 1_000_000:
        return "%.1fM" % (value / 1_000_000)
    if value >= 10_000:
        return "%.0fk" % (value / 1000)
    if value >= 1000:
        return "%.1fk" % (value / 1000)
    if value == int(value):
        return "%d" % value
    return "%.2g" % value


def _axis(value):
    """A round y-axis: (maximum, gridline step) covering ``value``.

    The step is 1, 2, 2.5 or 5 times a power of ten, chosen so that three or
    four gridlines span the data.
    """
    if not value or value <= 0:
        return 4, 1
    rough = value / 4
    magnitude = 10 ** math.floor(math.log10(rough))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10)
                if rough <= m * magnitude * (1 + 1e-9))
    if value >= 1 and step < 1:
        step = 1  # counts: no gridlines at fractions
    return step * math.ceil(value / step - 1e-9), step


def _iso(ts, hours=True):
    dt = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%MZ" if hours else "%Y-%m-%d")


def _frame(label, body, axis):
    """The svg element, y gridlines and labels around a plot body."""
    y_max, step = axis
    plot_h = HEIGHT - TOP - BOTTOM
    grid = []
    lines = int(round(y_max / step))
    for i in range(lines + 1):
        value = step * i
        y = TOP + plot_h - plot_h * value / y_max
        grid.append(
            '<line class="grid" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>'
            '<text class="axis" x="%d" y="%.1f" text-anchor="end">%s</text>'
            % (LEFT, WIDTH - RIGHT, y, y, LEFT - 6, y + 4, _fmt(value)))
    return Markup(
        '<svg class="chart" viewBox="0 0 %d %d" role="img" '
        'aria-label="%s">'
        '<title>%s</title>%s%s</svg>'
        % (WIDTH, HEIGHT, escape(label), escape(label), "".join(grid), body))


def _time_axis(t0, t1):
    """Tick labels along the bottom: days for long ranges, hours otherwise."""
    plot_w = WIDTH - LEFT - RIGHT
    span = max(t1 - t0, 1)
    day = 86400
    if span > 2 * day:
        step = day * max(1, round(span / day / 7))
        first = (int(t0) // day + 1) * day
        hours = False
    else:
        step = 3600 * max(1, round(span / 3600 / 6))
        first = (int(t0) // 3600 + 1) * 3600
        hours = True
    out = []
    t = first
    while t < t1:
        x = LEFT + plot_w * (t - t0) / span
        out.append(
            '<line class="tick" x1="%.1f" x2="%.1f" y1="%d" y2="%d"/>'
            '<text class="axis" x="%.1f" y="%d" text-anchor="middle">%s</text>'
            % (x, x, HEIGHT - BOTTOM, HEIGHT - BOTTOM + 4, x,
               HEIGHT - BOTTOM + 18, _iso(t, hours)))
        t += step
    return "".join(out)


def stacked_bars(points, series, label, start, end, step):
    """Bars over time, one stack per bucket.

    ``points`` is a list of dicts with a ``t`` key (bucket start, unix s)
    and one key per series; ``series`` is a list of (key, css class, name).
    """
    if not points:
        return empty(label)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    span = max(end - start, step)
    axis = _axis(max(sum(p[k] or 0 for k, _, _ in series) for p in points))
    y_max = axis[0]
    bar_w = max(plot_w * step / span - 0.6, 0.6)
    bars = []
    for p in points:
        x = LEFT + plot_w * (p["t"] - start) / span
        base = 0
        for key, css, name in series:
            value = p[key] or 0
            if not value:
                continue
            h = plot_h * value / y_max
            y = TOP + plot_h - plot_h * base / y_max - h
            bars.append(
                '<rect class="%s" x="%.1f" y="%.1f" width="%.1f" height="%.1f">'
                '<title>%s %s: %s</title></rect>'
                % (css, x, y, bar_w, h, _iso(p["t"]), escape(name), value))
            base += value
    return _frame(label, "".join(bars) + _time_axis(start, end), axis)


def area(points, key, label, start, end, css="depth", peak_key=None):
    """A filled line over time (queue depth); optional dotted peak line."""
    if not points:
        return empty(label)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    span = max(end - start, 1)
    top = max((p[peak_key or key] or 0) for p in points)
    axis = _axis(top)
    y_max = axis[0]

    def xy(p, k):
        x = LEFT + plot_w * (p["t"] - start) / span
        y = TOP + plot_h - plot_h * (p[k] or 0) / y_max
        return "%.1f,%.1f" % (x, y)

    line = " ".join(xy(p, key) for p in points)
    first_x = LEFT + plot_w * (points[0]["t"] - start) / span
    last_x = LEFT + plot_w * (points[-1]["t"] - start) / span
    body = ['<polygon class="%s" points="%.1f,%d %s %.1f,%d"/>'
            % (css, first_x, TOP + plot_h, line, last_x, TOP + plot_h),
            '<polyline class="%s-line" points="%s"/>' % (css, line)]
    if peak_key:
        body.append('<polyline class="peak" points="%s"/>'
                    % " ".join(xy(p, peak_key) for p in points))
    return _frame(label, "".join(body) + _time_axis(start, end), axis)


def histogram(buckets, label, css="bar"):
    """Vertical bars, one per bucket: (axis label, count[, hover title]).

    Axis labels are kept short (a bucket's lower edge); the hover title can
    say the whole range.
    """
    if not buckets or not any(b[1] for b in buckets):
        return empty(label)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    axis = _axis(max(b[1] for b in buckets))
    y_max = axis[0]
    slot = plot_w / len(buckets)
    body = []
    for i, bucket in enumerate(buckets):
        name, count = bucket[0], bucket[1]
        title = bucket[2] if len(bucket) > 2 else name
        x = LEFT + slot * i
        h = plot_h * count / y_max
        body.append(
            '<rect class="%s" x="%.1f" y="%.1f" width="%.1f" height="%.1f">'
            '<title>%s: %s</title></rect>'
            '<text class="axis" x="%.1f" y="%d" text-anchor="start">%s</text>'
            % (css, x + 1, TOP + plot_h - h, max(slot - 2, 1), h,
               escape(title), count, x + 1, HEIGHT - BOTTOM + 18,
               escape(name)))
    return _frame(label, "".join(body), axis)


def empty(label):
    """A placeholder with the same footprint when there is nothing to draw."""
    return Markup(
        '<svg class="chart" viewBox="0 0 %d 60" role="img" aria-label="%s" '
        '><title>%s</title>'
        '<text class="axis" x="%d" y="34" text-anchor="middle">'
        'no data recorded</text></svg>'
        % (WIDTH, escape(label), escape(label), WIDTH // 2))
