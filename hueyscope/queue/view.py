"""``hueyscope status``: what is in the queue right now.

For a SQLite queue it reads the file read-only with plain SQL, so it works
while consumers run, never creates or changes anything, and shows every
huey queue stored in the file. huey keeps results, locks and revocations in
one key/value table; they are told apart by their keys: ``<queue>.lock.<name>``
is a lock held by a running task, ``r:<task id>`` a revocation, anything
else a result waiting to be read. On a leased queue (at-least-once, see
:mod:`hueyscope.queue.leases`) it also lists the tasks each consumer holds, the
consumers that died holding some (their work goes back on the queue at the
next recovery), each lock's holder and age, the parked tasks, the
paused task names with the messages each holds back, the unique keys held
and the concurrency slots in use.
"""
import os
import sqlite3
import time

from hueyscope.queue.tables import LOCK_MARK
from hueyscope.queue import check_queue_file
from hueyscope.queue.files import check_queue_schema
from hueyscope.readonly import read_only
from hueyscope.settings import DEFAULT_LEASE_TIMEOUT

# The tables of huey's a queue file must have for status to read it.
STATUS_TABLES = ("task", "schedule", "kv")


def _classify(queue, keys):
    lock_prefix = "%s.lock." % queue
    locks, revoked, results = [], 0, 0
    for key in keys:
        if isinstance(key, bytes):
            key = key.decode("utf-8", "replace")
        if key.startswith(lock_prefix):
            locks.append(key[len(lock_prefix):])
        elif key.startswith("r:"):
            revoked += 1
        elif ".rl." in key or key.startswith("%s.rl." % queue):
            continue  # rate-limit windows
        else:
            results += 1
    return sorted(locks), revoked, results


def holder_describer(rows, lease_timeout, now):
    """A function of a holder id: who it is (host, pid, run), whether it is
    alive or why it is dead, and its heartbeat's age. ``rows``: the
    queue's holders (see :func:`hueyscope.queue.recovery.holders`)."""
    from hueyscope.queue.recovery import dead_holders

    dead = dead_holders(rows, lease_timeout)
    by_id = {h.id: h for h in rows}

    def who(holder_id):
        h = by_id.get(holder_id)
        if h is None:
            return {"holder": holder_id, "run_id": None, "pid": None, "host": None,
                    "alive": False, "heartbeat_age": None,
                    "dead_because": "its holder is gone from the queue"}
        return {"holder": h.id, "run_id": h.run_id, "pid": h.pid,
                "host": h.hostname, "alive": h.id not in dead,
                "dead_because": dead[h.id][1] if h.id in dead else None,
                "heartbeat_age": round(now - h.heartbeat, 1)}
    return who


def _lease_status(conn, entry, lease_timeout):
    """Add leases per holder, dead holders, lock holders and parked tasks."""
    from hueyscope.queue.recovery import holders

    now = time.time()
    who = holder_describer(holders(conn), lease_timeout, now)

    for name, holder, count, oldest in conn.execute(
            "select queue, holder, count(*), min(taken) from hueyscope_lease "
            "group by queue, holder order by holder"):
        entry(name)["leases"].append(dict(
            who(holder), tasks=count, oldest_age=round(now - oldest, 1)))
    for name, key, holder, worker, taken in conn.execute(
            "select queue, key, holder, worker, taken from hueyscope_lock "
            "order by taken"):
        entry(name)["lock_holders"].append(dict(
            who(holder), lock=key.split(LOCK_MARK, 1)[-1], worker=worker,
            age=round(now - taken, 1)))
    for name, count in conn.execute(
            "select queue, count(*) from hueyscope_dead_letter group by queue"):
        entry(name)["parked"] = count


def _pause_status(conn, entry, task_table):
    """Add each queue's pauses, with the messages each holds back."""
    from hueyscope.queue.control import ALL, held_back

    pauses = conn.execute(
        "select queue, task, paused, actor from hueyscope_paused "
        "order by queue, task").fetchall()
    if not pauses:
        return
    pending = {}
    for queue, name, n in conn.execute(
            "select queue, hueyscope_name, count(*) from %s group by 1, 2"
            % task_table):
        pending.setdefault(queue, {})[name] = n
    for queue, name, when, actor in pauses:
        entry(queue)["paused"].append({
            "task": name, "since": when, "actor": actor,
            "held_back": held_back({name}, pending.get(queue, {})),
            "whole_queue": name == ALL})


def concurrency_slots(conn, task_table, queue=None):
    """Concurrency slots in use or waited for, of every queue or of ``queue``:
    [(queue, {"slot", "running", "limit", "waiting"})], sorted (see
    queue.control). ``conn`` is a connection or a QueueCursor, and
    ``task_table`` huey's task table as it names it."""
    where, params = ("queue = ? and ", (queue,)) if queue is not None else ("", ())
    slots = {}
    for name, slot, running, limit in conn.execute(
            "select queue, slot, count(*), max(slot_limit) from hueyscope_lease "
            "where %sslot is not null group by queue, slot" % where, params):
        slots[(name, slot)] = {"slot": slot, "running": running,
                               "limit": limit, "waiting": 0}
    for name, slot, waiting, limit in conn.execute(
            "select queue, hueyscope_slot, count(*), max(hueyscope_limit) from "
            "%s where %shueyscope_slot is not null group by 1, 2" % (
                task_table, where), params):
        slots.setdefault((name, slot), {"slot": slot, "running": 0,
                                        "limit": limit})["waiting"] = waiting
    return [(name, item) for (name, _), item in sorted(slots.items())]


def _control_status(conn, entry, task_table):
    """Add each queue's unique keys held and its concurrency slots in use
    or waited for (see queue.control)."""
    for queue, n in conn.execute(
            "select queue, count(*) from hueyscope_unique group by queue"):
        entry(queue)["unique_keys"] = n
    for queue, item in concurrency_slots(conn, task_table):
        entry(queue)["slots"].append(item)


def sqlite_status(path, lease_timeout=DEFAULT_LEASE_TIMEOUT):
    """{queue name: counts} for the SQLite queue file at ``path``.

    Raises ValueError (one line) for a missing file or one that is not a
    huey queue; never writes.
    """
    if not os.path.exists(path):
        raise ValueError("no queue at %s (nothing enqueued yet?)" % path)
    if os.path.isdir(path):
        raise ValueError("queue %s is a folder, not a SQLite file" % path)
    # An event store or another database given as the queue is named as such.
    check_queue_file(path)
    try:
        # Read-only, leaving no -wal or -shm file behind (hueyscope.readonly).
        return read_only(path, lambda conn: _read_status(
            conn, path, lease_timeout))
    except sqlite3.Error as exc:
        raise ValueError("cannot read queue %s: %s" % (path, exc))


def _read_status(conn, path, lease_timeout):
    # Again, on the connection that reads: the file may have been replaced
    # since check_queue_file.
    check_queue_schema(conn, path)
    tables = {row[0] for row in conn.execute(
        "select name from sqlite_master where type = 'table'")}
    if not tables:
        raise ValueError("%s is an empty SQLite file, not a huey queue" % path)
    missing = [t for t in STATUS_TABLES if t not in tables]
    if missing:
        raise ValueError("%s is a SQLite database but not a huey queue "
                         "(no %s table)" % (path, missing[0]))
    queues = {}
    leased = "hueyscope_lease" in tables

    def entry(name):
        if name not in queues:
            queues[name] = {"pending": 0, "scheduled": 0, "next_due": None,
                            "results": 0, "revoked": 0, "locks": []}
            if leased:
                queues[name].update(leases=[], lock_holders=[], parked=0,
                                    paused=[], unique_keys=0, slots=[])
        return queues[name]

    for name, count in conn.execute(
            "select queue, count(*) from task group by queue"):
        entry(name)["pending"] = count
    for name, count, due in conn.execute(
            "select queue, count(*), min(timestamp) from schedule group by queue"):
        entry(name).update(scheduled=count, next_due=schedule_time(due))
    keys = {}
    for name, key in conn.execute("select queue, key from kv"):
        keys.setdefault(name, []).append(key)
    for name, names in keys.items():
        locks, revoked, results = _classify(name, names)
        entry(name).update(locks=locks, revoked=revoked, results=results)
    if leased:
        _lease_status(conn, entry, lease_timeout)
        names = {row[1] for row in conn.execute("pragma table_info(task)")}
        if "hueyscope_paused" in tables and "hueyscope_name" in names:
            _pause_status(conn, entry, "task")
        if "hueyscope_unique" in tables and "hueyscope_slot" in names:
            _control_status(conn, entry, "task")
    return queues


def schedule_time(stored, utc=True):
    """Unix seconds of a time in huey's SQLite ``schedule`` table.

    huey stores ``time.mktime`` of the naive eta, which reads it as local
    time; the eta of a ``utc=True`` Huey (hueyscope's) is naive UTC, so
    under any other zone the stored number is off by the zone's offset.
    Turned back into the naive eta, it is read the way the Huey meant it.
    """
    if stored is None or not utc:
        return stored
    import calendar
    import datetime

    naive = datetime.datetime.fromtimestamp(stored)
    return calendar.timegm(naive.timetuple()) + naive.microsecond / 1e6


def huey_status(huey, lease_timeout=DEFAULT_LEASE_TIMEOUT):
    """The same counts through huey's storage API (PostgreSQL, Redis).

    A leased PostgreSQL queue also lists its leases, lock holders and
    parked tasks, read from the same tables of record as on SQLite.
    """
    from hueyscope.queue.tables import QueueCursor

    keys = list(huey.storage.result_items())
    locks, revoked, results = _classify(huey.name, keys)
    queues = {huey.name: {
        "pending": huey.pending_count(), "scheduled": huey.scheduled_count(),
        "next_due": None, "results": results, "revoked": revoked,
        "locks": locks}}
    if not getattr(huey.storage, "leased", False):
        return queues

    def entry(name):
        if name not in queues:
            queues[name] = {"pending": 0, "scheduled": 0, "next_due": None,
                            "results": 0, "revoked": 0, "locks": []}
        queues[name].setdefault("leases", [])
        queues[name].setdefault("lock_holders", [])
        queues[name].setdefault("parked", 0)
        queues[name].setdefault("paused", [])
        queues[name].setdefault("unique_keys", 0)
        queues[name].setdefault("slots", [])
        return queues[name]

    entry(huey.name)
    with huey.storage.db() as curs:
        _lease_status(QueueCursor(huey.storage, curs), entry, lease_timeout)
        _pause_status(QueueCursor(huey.storage, curs), entry, "{task}")
        _control_status(QueueCursor(huey.storage, curs), entry, "{task}")
    return queues
