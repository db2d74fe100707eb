"""What each alert rule measures, read from the event store (and the queue).

:func:`evaluate` runs the configured rules (see :mod:`hueyscope.alerts.rules`)
and returns one :class:`Finding` per rule: the measured value, the
threshold, whether it fired (an alert), and a one-line message naming what
was measured and both numbers. Quiet findings are kept too, so ``hueyscope
check -v`` can say what every rule saw.

The event store is read read-only (no ``-wal`` or ``-shm`` left beside a
store nobody has open), after its schema is found to be ours
(:func:`hueyscope.events.schema.check_store`), each query within :data:`QUERY_SECONDS`;
times are compared with ``now`` (unix seconds), not with SQLite's clock, so
a check is repeatable.
"""
import dataclasses
import datetime
import json
import os
import sqlite3
import time

from hueyscope.events.queries import FAILED_OUTCOMES, OUTCOMES, last_beat, sql_list, task_lost
from hueyscope.events.schema import check_store
from hueyscope.readonly import read_only
from hueyscope.signals import STALE_SECONDS

# Seconds one query of a check may run; each takes milliseconds on a
# million events.
QUERY_SECONDS = 30.0


@dataclasses.dataclass(frozen=True)
class Finding:
    """What one rule measured: ``fired`` when ``value`` is above ``threshold``
    (for ``disk_free``, free bytes below the floor in bytes)."""

    rule: str
    fired: bool
    message: str
    value: float = None
    threshold: float = None


@dataclasses.dataclass
class Sources:
    """Where the checks read: the store, the queue, the app, the time.

    ``queue``: the SQLite queue file, or None (another backend, or not
    given). ``app``: a callable returning the Huey instance, called only by
    the periodic check, and only when some consumer declared periodic tasks.
    ``consumer``: the run id of the consumer the checks run in
    (``consume --check-every``), which is alive whatever the store says yet.
    """

    events: str
    queue: str = None
    app: object = None
    now: float = dataclasses.field(default_factory=time.time)
    consumer: str = None


def evaluate(rules, sources):
    """A :class:`Finding` per configured rule, in the order of ``rules``.

    Raises sqlite3.Error for a store that cannot be read, ValueError (one
    line) for one whose schema is not ours.
    """
    def read(conn):
        check_store(conn, sources.events)
        return [CHECKS[name](conn, params, sources)
                for name, params in rules.items()]

    return read_only(sources.events, read, seconds=QUERY_SECONDS)


def firing(findings):
    return [f for f in findings if f.fired]


def _seconds(value):
    """A duration as people read it: 45 s, 12 min, 3 h, 2 d."""
    value = float(value)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if value >= size:
            return "%g %s" % (round(value / size, 1), unit)
    return "%d s" % round(value)


def _percent(share):
    return "%g %%" % round(share * 100, 1)


# -- oldest pending ------------------------------------------------------------

def oldest_pending(conn, params, sources):
    """Age of the oldest task recorded as waiting in the queue and due.

    A task is pending from its ``ready`` time (enqueue, or the eta of a
    scheduled task) until a worker starts it. When the SQLite queue is
    given and holds no message at all, nothing is pending whatever the
    store says (a store can keep a task 'enqueued' whose queue was wiped).
    """
    threshold = params["threshold"]
    paused = _paused_names(sources.queue)
    if "*" in paused:
        return Finding("oldest_pending", False, "oldest_pending: the queue is "
                       "paused (hueyscope resume)", 0.0, threshold)
    # A paused task waits because it was asked to.
    params_sql = {"p%d" % i: name for i, name in enumerate(sorted(paused))}
    not_paused = " and task not in (%s)" % ", ".join(
        ":" + key for key in params_sql) if paused else ""
    row = conn.execute(
        "select task, task_id, ready, (select count(*) from tasks where "
        "status = 'enqueued' and ready <= :now" + not_paused + ") from tasks "
        "where status = 'enqueued' and ready <= :now" + not_paused +
        " order by ready limit 1", dict(params_sql, now=sources.now)).fetchone()
    if row is None and paused:
        return Finding("oldest_pending", False, "oldest_pending: no task "
                       "pending but those of paused tasks (%s)"
                       % ", ".join(sorted(paused)), 0.0, threshold)
    if row is None:
        return Finding("oldest_pending", False, "oldest_pending: no task pending",
                       0.0, threshold)
    task, task_id, ready, pending = row
    in_queue = _queue_messages(sources.queue)
    if in_queue == 0:
        return Finding("oldest_pending", False,
                       "oldest_pending: the queue holds no task (the store "
                       "still shows %d enqueued)" % pending, 0.0, threshold)
    age = sources.now - ready
    return Finding(
        "oldest_pending", age > threshold,
        "oldest_pending: task %s (%s) has waited %s in the queue (threshold "
        "%s); %d task(s) pending" % (task, task_id, _seconds(age),
                                     _seconds(threshold), pending),
        round(age, 3), threshold)


def _paused_names(path):
    """The task names paused in the SQLite queue at ``path``, named as the
    store names tasks (``*``: the whole queue); empty when unknown."""
    if not path or not os.path.isfile(path):
        return set()

    def read(conn):
        if not conn.execute("select 1 from sqlite_master where type = 'table' "
                            "and name = 'hueyscope_paused'").fetchone():
            return set()
        return {name.rsplit(".", 1)[-1] for name, in conn.execute(
            "select task from hueyscope_paused")}

    try:
        return read_only(path, read)
    except sqlite3.Error:
        return set()


def _queue_messages(path):
    """Messages in the SQLite queue at ``path``; None if unknown.

    Raises ValueError (one line) for a queue whose schema is not ours
    (:func:`hueyscope.queue.files.check_queue_schema`).
    """
    from hueyscope.queue.files import check_queue_schema

    if not path or not os.path.isfile(path):
        return None

    def count(conn):
        check_queue_schema(conn, path)
        return conn.execute("select count(*) from task").fetchone()[0]

    try:
        return read_only(path, count, seconds=QUERY_SECONDS)
    except sqlite3.Error:
        return None


# -- failure rate --------------------------------------------------------------

def failure_rate(conn, params, sources):
    """Share of the tasks finished in the window whose outcome was a failure.

    Finished means complete, failed (no retry left) or timed out; a retried
    attempt is not an outcome. Below ``min_finished`` the share says too
    little, and the rule stays silent.
    """
    threshold, window = params["threshold"], params["window"]
    failed, finished = conn.execute(
        "select coalesce(sum(status in %s), 0), count(*) from tasks where "
        "finished >= ? and finished <= ? and status in %s"
        % (sql_list(FAILED_OUTCOMES), sql_list(OUTCOMES)),
        (sources.now - window, sources.now)).fetchone()
    rate = failed / finished if finished else 0.0
    fired = finished >= params["min_finished"] and rate > threshold
    message = "failure_rate: %d of %d task(s) finished in the last %s failed " \
              "(%s; threshold %s, at least %d finished)" % (
                  failed, finished, _seconds(window), _percent(rate),
                  _percent(threshold), params["min_finished"])
    return Finding("failure_rate", fired, message, round(rate, 4), threshold)


# -- lost tasks ----------------------------------------------------------------

def lost_task(conn, params, sources):
    """Tasks lost in the window.

    Two kinds: a task still ``executing`` under a run that stopped, or whose
    last heartbeat is older than ``stale`` (the run died with it; at-most-once
    queues), counted when the run's last sign of life falls in the window;
    and a ``lost`` event (a leased task parked after too many recoveries).
    """
    threshold, window, stale = params["threshold"], params["window"], params["stale"]
    since = sources.now - window
    orphans = conn.execute(
        "select t.task, t.task_id, t.run_id from tasks t "
        "left join runs r on r.id = t.run_id "
        "where " + task_lost(":now", ":stale") + " "
        "and coalesce(r.stopped, r.heartbeat, r.started, t.started) >= :since "
        "order by t.started",
        {"now": sources.now, "stale": stale, "since": since}).fetchall()
    parked = conn.execute(
        "select task, task_id, run_id from events where signal = 'lost' "
        "and ts >= ? and ts <= ? order by ts",
        (since, sources.now)).fetchall()
    lost = len({row[1] for row in orphans + parked})
    parts = []
    if orphans:
        parts.append("%d executing under a run that stopped or fell silent "
                     "(%s under %s)" % (len(orphans), orphans[0][0], orphans[0][2]))
    if parked:
        parts.append("%d parked as lost (%s under %s)" % (
            len(parked), parked[0][0], parked[0][2]))
    message = "lost_task: %d task(s) lost in the last %s%s (threshold %d)" % (
        lost, _seconds(window), ": " + "; ".join(parts) if parts else "", threshold)
    return Finding("lost_task", lost > threshold, message, lost, threshold)


# -- live consumer -------------------------------------------------------------

def no_consumer(conn, params, sources):
    """Seconds since the newest heartbeat of a consumer run still running.

    A run that recorded its stop is not live, however recent its last beat.
    """
    threshold = params["threshold"]
    if "*" in _paused_names(sources.queue):
        # Paused on purpose: a backlog with no consumer is what was asked.
        return Finding("no_consumer", False, "no_consumer: the queue is paused "
                       "(hueyscope resume)", None, threshold)
    if sources.consumer:
        # Checked from inside a consumer, which is running: its run may not
        # have reached the store yet (its first check comes before it).
        return Finding("no_consumer", False, "no_consumer: checked inside "
                       "consumer %s, which runs" % sources.consumer, 0.0, threshold)
    live = conn.execute(
        "select id, " + last_beat() + " as beat from runs "
        "where role = 'consumer' and stopped is null "
        "order by beat desc limit 1").fetchone()
    if live is not None and sources.now - live[1] <= threshold:
        return Finding("no_consumer", False,
                       "no_consumer: consumer %s beat %s ago" % (
                           live[0], _seconds(max(sources.now - live[1], 0))),
                       round(max(sources.now - live[1], 0), 3), threshold)
    last = conn.execute(
        "select id, max(coalesce(stopped, heartbeat, started)), stopped "
        "from runs where role = 'consumer'").fetchone()
    if last is None or last[0] is None:
        return Finding("no_consumer", True,
                       "no_consumer: no consumer run on record (threshold %s)"
                       % _seconds(threshold), None, threshold)
    run_id, seen, stopped = last
    age = max(sources.now - seen, 0)
    how = "stopped" if stopped is not None else "last beat"
    return Finding(
        "no_consumer", True,
        "no_consumer: no consumer has sent a heartbeat in the last %s; the "
        "newest, %s, %s %s ago" % (_seconds(threshold), run_id, how, _seconds(age)),
        round(age, 3), threshold)


# -- periodic tasks ------------------------------------------------------------

def missed_tick(conn, params, sources):
    """The periodic task whose last due tick is the most overdue.

    The tasks checked are those huey's registry declared periodic to the
    consumer runs still beating (or, with none, to the newest one:
    ``runs.periodic``). For each, its crontab (the app's
    ``validate_datetime``) gives the last minute it was due, at least
    ``threshold`` ago and after the first consumer declaring it started;
    an ``enqueued`` or ``executing`` event of the task since that minute
    means the tick was served.
    """
    threshold, lookback = params["threshold"], params["lookback"]
    declared = _declared_periodic(conn, sources.now)
    if not declared:
        return Finding("missed_tick", False,
                       "missed_tick: no consumer declares periodic tasks",
                       0.0, threshold)
    huey = sources.app() if sources.app is not None else None
    if huey is None:
        return Finding("missed_tick", False,
                       "missed_tick: no app to read the crontabs from",
                       0.0, threshold)
    tasks = {t.name: t for t in huey._registry.periodic_tasks}
    worst = None
    for name, first_started in sorted(declared.items()):
        task = tasks.get(name)
        if task is None:  # declared by an older deploy of the app
            continue
        earliest = max(first_started, sources.now - lookback)
        tick = last_due_tick(task, huey.utc, sources.now - threshold, earliest)
        if tick is None or _served_since(conn, name, tick):
            continue
        if worst is None or tick < worst[1]:
            worst = (name, tick)
    if worst is None:
        return Finding("missed_tick", False,
                       "missed_tick: no periodic task missed a tick due at "
                       "least %s ago (%s)" % (_seconds(threshold),
                                             ", ".join(sorted(declared))), 0.0, threshold)
    name, tick = worst
    late = sources.now - tick
    return Finding(
        "missed_tick", True,
        "missed_tick: periodic task %s was due at %s UTC and nothing "
        "enqueued or ran it in the %s since (threshold %s)" % (
            name, time.strftime("%Y-%m-%d %H:%M", time.gmtime(tick)),
            _seconds(late), _seconds(threshold)),
        round(late, 3), threshold)


def _declared_periodic(conn, now, live_within=STALE_SECONDS):
    """{periodic task name: when the first run declaring it started}.

    Names come from the runs still beating, or the newest consumer run if
    none is: what the app declares now, not what an old deploy did.
    """
    columns = {row[1] for row in conn.execute("pragma table_info(runs)")}
    if "periodic" not in columns:  # a store no consumer has upgraded (m005)
        return {}
    runs = conn.execute(
        "select started, coalesce(heartbeat, started), stopped, periodic "
        "from runs where role = 'consumer' and periodic is not null "
        "order by started").fetchall()
    if not runs:
        return {}
    live = [r for r in runs if r[2] is None and r[1] >= now - live_within]
    names = set()
    for run in live or runs[-1:]:
        names.update(_names(run[3]))
    first = {}
    for started, _, _, periodic in runs:
        for name in _names(periodic):
            if name in names:
                first.setdefault(name, started)
    return first


def _names(periodic):
    try:
        names = json.loads(periodic)
    except (TypeError, ValueError):
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def last_due_tick(task, utc, before, after):
    """Unix time of the last minute in (``after``, ``before``] the task was due.

    ``task.validate_datetime`` is huey's crontab test; it takes a naive
    datetime in the Huey's clock (UTC, or local time with ``utc=False``).
    None when no minute of that span is due.
    """
    minute = int(before // 60) * 60
    while minute > after:
        if utc:
            moment = datetime.datetime.fromtimestamp(
                minute, datetime.timezone.utc).replace(tzinfo=None)
        else:
            moment = datetime.datetime.fromtimestamp(minute)
        if task.validate_datetime(moment):
            return float(minute)
        minute -= 60
    return None


def _served_since(conn, name, tick):
    return conn.execute(
        "select 1 from events where task = ? and ts >= ? and signal in "
        "('enqueued', 'executing') limit 1", (name, tick)).fetchone() is not None


# -- disk space ----------------------------------------------------------------

def _bytes(n):
    """A size as people read it: 812 kB, 3.4 MB, 1.2 GB (powers of 1000)."""
    n = float(n)
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return "%.3g %s" % (n / scale, unit)
    return "%d B" % n


def _filesystems(sources):
    """[(what, folder, statvfs)]: one per file system holding the event store
    or the SQLite queue ("event store and queue" when they share one)."""
    found = {}
    for what, path in (("event store", sources.events), ("queue", sources.queue)):
        if not path:
            continue
        folder = os.path.dirname(os.path.abspath(path))
        try:
            device = os.stat(folder).st_dev
            stats = os.statvfs(folder)
        except OSError:  # a queue folder that is not there: nothing to watch
            continue
        if device in found:
            found[device][0].append(what)
        else:
            found[device] = ([what], folder, stats)
    return [(" and ".join(whats), folder, stats)
            for whats, folder, stats in found.values()]


def disk_free(conn, params, sources):
    """Free space of the file system holding the event store (and of the one
    holding the SQLite queue, if another), against a floor.

    The floor is ``threshold`` of the file system's size or ``min_free``
    bytes, whichever is more. Free is what an unprivileged process may still
    write (``df``'s Avail): the blocks kept for root are not counted on. With
    two file systems, the one furthest under (or closest to) its floor is
    reported.
    """
    worst = None
    for what, folder, stats in _filesystems(sources):
        total = stats.f_blocks * stats.f_frsize
        free = stats.f_bavail * stats.f_frsize
        floor = max(params["threshold"] * total, params["min_free"])
        # Free over floor: below 1 fires; the lowest is the most pressing.
        ratio = free / floor if floor else float("inf")
        if worst is None or ratio < worst[0]:
            worst = (ratio, what, folder, total, free, floor)
    if worst is None:
        return Finding("disk_free", False,
                       "disk_free: no file system to check", None, None)
    _, what, folder, total, free, floor = worst
    share = free / total if total else 0.0
    message = "disk_free: %s free of %s (%s) on the file system of the %s " \
              "(%s); threshold %s or %s, whichever is more (%s)" % (
                  _bytes(free), _bytes(total), _percent(share), what, folder,
                  _percent(params["threshold"]), _bytes(params["min_free"]),
                  _bytes(floor))
    fired = free < floor
    if fired:
        message += "; the event store takes %s" % _bytes(_store_bytes(sources.events))
    return Finding("disk_free", fired, message, free, round(floor))


def _store_bytes(path):
    """Bytes of the store's database file and its write-ahead log."""
    return sum(os.path.getsize(p) for p in (path, path + "-wal")
               if os.path.exists(p))


def store_size(conn, params, sources):
    """Bytes of the event store's database file and write-ahead log.

    Pruning frees pages inside the file for new rows without shrinking it:
    a store that fires here stays this size until ``prune --vacuum``.
    """
    threshold = params["threshold"]
    database = os.path.getsize(sources.events)
    wal = sources.events + "-wal"
    wal = os.path.getsize(wal) if os.path.exists(wal) else 0
    total = database + wal
    message = "store_size: the event store %s takes %s (database %s, " \
              "write-ahead log %s; threshold %s)" % (
                  sources.events, _bytes(total), _bytes(database), _bytes(wal),
                  _bytes(threshold))
    fired = total > threshold
    if fired:
        message += "; a shorter --retention, then hueyscope prune --vacuum, " \
                   "shrinks it"
    return Finding("store_size", fired, message, total, threshold)


CHECKS = {
    "oldest_pending": oldest_pending,
    "failure_rate": failure_rate,
    "lost_task": lost_task,
    "no_consumer": no_consumer,
    "missed_tick": missed_tick,
    "disk_free": disk_free,
    "store_size": store_size,
}
