"""Time buckets for the charts: a resolution that follows the period.

A 15 s run is drawn per second, a day per 15 minutes, a week per 2 hours,
a month per day. Buckets of an hour or more are read from the hourly
roll-ups (cheap, and they survive pruning); shorter ones from the events
themselves, which is only done when the period is short (at most a few
days), and only when no event of the period was pruned.

Every series is dense: one point per bucket from the start to the end of
the chart, zero (or None for queue depth: no sample) where nothing
happened, so bars have the width of their bucket and nothing is drawn
outside the period.
"""
import math
from collections import namedtuple

# Bucket lengths, seconds: each divides a day, so buckets start at round
# UTC times (12:00:05, 12:15, 14:00, midnight).
STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200,
         10800, 21600, 43200, 86400)
HOUR = 3600
DAY = 86400
# At most this many bars (below a day per bar), and this many depth points.
BARS = 120
POINTS = 300
# Counting one task's executions in buckets under an hour reads every one
# of its events from the table (the signal and time index does not hold the
# task name): about 2 s over the task pages of a million events. Past this
# many events, task pages use the hourly roll-ups unless that leaves fewer
# than MIN_HOURS bars.
TASK_EVENTS = 200_000
MIN_HOURS = 12
# A chart spans at least this many buckets, so one event is one narrow bar
# in the middle of a labelled time axis rather than one bar across the chart.
MIN_BUCKETS = 10

# One chart's buckets: ``points`` (dicts with ``t``, the bucket start), the
# chart's ``start`` and ``end`` and the bucket length ``step``, seconds.
Timeline = namedtuple("Timeline", "points start end step")


def choose_step(first, last, most=BARS, hourly_only=False):
    """The shortest bucket that draws ``first``..``last`` in ``most`` buckets.

    Days are the longest bucket: a year is 365 bars. ``hourly_only`` keeps
    to whole hours (the resolution of the roll-ups).
    """
    if first is None or last is None:
        return HOUR if hourly_only else 1
    span = max(last - first, 0)
    for step in STEPS:
        if hourly_only and step < HOUR:
            continue
        if span / step <= most:
            return step
    return DAY


def frame(first, last, step):
    """(start, end) of a chart: whole buckets around the period, at least
    MIN_BUCKETS of them, the data centred when it is shorter than that."""
    start = math.floor(first / step) * step
    end = math.floor(last / step) * step + step
    missing = MIN_BUCKETS - int(round((end - start) / step))
    if missing > 0:
        start -= (missing // 2) * step
        end += (missing - missing // 2) * step
    return start, end


def _dense(rows, start, end, step, keys, empty=0):
    """One dict per bucket from ``start`` to ``end``; ``rows`` keyed by ``t``."""
    by_t = {int(r["t"]): r for r in rows}
    points = []
    for i in range(int(round((end - start) / step))):
        t = int(start + i * step)
        row = by_t.get(t)
        points.append(dict({k: (row[k] if row and row[k] is not None else empty)
                            for k in keys}, t=t))
    return points


def _events_cover(period):
    """True when the events table still holds the start of the period
    (older events were not pruned, leaving only their roll-ups)."""
    oldest = period.get("events_first")
    return oldest is not None and oldest <= period["first"] + 1e-6


def throughput(store, period, task=None):
    """Executions per bucket over the period, a :class:`Timeline`.

    Each point has ``t`` (bucket start) and the executions that ended in it:
    ``completed``, ``errors`` (retried or not) and ``locked`` (found their
    lock held). Each is a count of one signal, so the roll-ups and the
    events give the same numbers. ``task`` limits it to one task name;
    for a busy store its buckets may be hours where the overview's are
    minutes (see TASK_EVENTS).
    """
    first, last = period["first"], period["last"]
    if first is None or last is None:
        return Timeline([], None, None, HOUR)
    step = choose_step(first, last)
    if step < HOUR and (not _events_cover(period) or (
            task is not None and period["events"] > TASK_EVENTS
            and last - first >= MIN_HOURS * HOUR)):
        step = choose_step(first, last, hourly_only=True)
    start, end = frame(first, last, step)
    if step < HOUR:
        rows = store.rows(
            "select cast(ts / ? as integer) * ? as t, "
            "sum(signal = 'complete') as completed, "
            "sum(signal = 'error') as errors, "
            "sum(signal = 'locked') as locked from events "
            "where signal in ('complete', 'error', 'locked') "
            "and ts >= ? and ts < ?%s group by 1"
            % (" and task = ?" if task is not None else ""),
            step, step, start, end, *([task] if task is not None else []))
    else:
        rows = store.rows(
            "select cast(hour / ? as integer) * ? as t, "
            "sum(case when signal = 'complete' then count else 0 end) as completed, "
            "sum(case when signal = 'error' then count else 0 end) as errors, "
            "sum(case when signal = 'locked' then count else 0 end) as locked "
            "from rollup_hourly where hour >= ? and hour < ?%s group by 1"
            % (" and task = ?" if task is not None else ""),
            step, step, start, end, *([task] if task is not None else []))
    points = _dense(rows, start, end, step, ("completed", "errors", "locked"))
    return Timeline(points, start, end, step)


def queue_depth(store, period):
    """Pending messages per bucket, as sampled, a :class:`Timeline`.

    Each point has ``t``, ``pending`` (the average of the samples in the
    bucket) and ``peak`` (their maximum); both None where no consumer
    sampled, so the line breaks instead of inventing an empty queue.
    """
    first, last = period["first"], period["last"]
    if first is None or last is None:
        return Timeline([], None, None, 60)
    step = choose_step(first, last, most=POINTS)
    start, end = frame(first, last, step)
    rows = store.rows(
        "select cast(ts / ? as integer) * ? as t, avg(pending) as pending, "
        "max(pending) as peak from queue_samples "
        "where ts >= ? and ts < ? group by 1", step, step, start, end)
    if not rows:
        return Timeline([], start, end, step)
    return Timeline(_dense(rows, start, end, step, ("pending", "peak"), None),
                    start, end, step)
