"""What is in a queue right now, read through its open Huey, for the Now page.

One function, :func:`snapshot`, reads everything the page shows in one
pass over the queue's tables (SQLite or PostgreSQL alike, through
:class:`~hueyscope.queue.tables.QueueCursor`) and returns plain values the
page renders and the JSON endpoint returns as they are. It only reads.

It stays cheap on a deep queue: counts and groups are SQL, and only a
bounded number of messages is ever read (the oldest pending ones for the
per-name breakdown, the next scheduled ones, the leased ones), and read
without unpickling them.
"""
import collections
import time

from hueyscope.queue import peek
from hueyscope.queue.control import ALL, paused_in
from hueyscope.queue.recovery import dead_holders, holders
from hueyscope.queue.tables import LOCK_MARK, QueueCursor
from hueyscope.queue.view import (concurrency_slots, holder_describer,
                                  schedule_time)

# Pending messages deserialized to count them by task name. A queue deeper
# than this shows the breakdown of its oldest SAMPLE messages, and says so.
SAMPLE = 1000
SHOWN = 50  # scheduled tasks and revocations listed


def _tables(storage):
    """Names of huey's tables for ``storage`` (the schedule one is not in queue_tables)."""
    return getattr(storage, "table_schedule", "schedule")


# (task id, name) of messages already read, by their bytes: the page polls
# every few seconds, and walking a pickle's opcodes costs tens of
# microseconds a message.
_HEADS = {}
_HEADS_KEPT = 4 * SAMPLE


def _message(huey, data):
    """(task id, task name) of a stored message; (None, None) if unreadable.

    Read without unpickling (:mod:`hueyscope.queue.peek`): looking at a
    queue runs none of its messages' code.
    """
    data = bytes(data)
    head = _HEADS.get(data)
    if head is None:
        head = peek.message_head(huey.serializer, data)
        if len(_HEADS) >= _HEADS_KEPT:
            _HEADS.clear()
        _HEADS[data] = head
    return head


def _short(name):
    return (name or "?").rsplit(".", 1)[-1]


def snapshot(huey, lease_timeout):
    """Everything the Now page shows of ``huey``'s queue, as plain values."""
    storage = huey.storage
    queue = storage.name
    now = time.time()
    out = {"queue": queue, "now": now, "leased": bool(getattr(storage, "leased", False))}
    if not hasattr(storage, "db"):
        out.update(_through_huey(huey))  # Redis: no SQL, no leases
        return out
    with storage.db() as raw:
        curs = QueueCursor(storage, raw)
        out["pending"] = _pending(huey, curs, queue)
        out["scheduled"] = _scheduled(huey, curs, queue)
        out["revoked"] = _revoked(curs, queue)
        if out["leased"]:
            out.update(_leased(huey, curs, queue, now, lease_timeout))
            out["paused"] = _paused(curs, queue)
            out["limits"] = _limits(curs, queue)
            out["unique_keys"] = curs.execute(
                "select count(*) from hueyscope_unique where queue = ?",
                (queue,)).fetchone()[0]
    return out


def _through_huey(huey):
    """What huey's storage API tells of a queue kept outside SQL (Redis).

    Its messages are read as raw bytes and peeked at, never unpickled; a
    scheduled message's due time is not read from them.
    """
    storage = huey.storage
    groups = collections.Counter(
        _message(huey, data)[1] for data in storage.enqueued_items(SAMPLE))
    total = huey.pending_count()
    items = []
    for data in storage.scheduled_items(SHOWN):
        task_id, name = _message(huey, data)
        items.append({"task_id": task_id, "task": name, "short": _short(name),
                      "due": None})
    return {
        "pending": {"total": total, "by_priority": [], "oldest_id": None,
                    "by_name": [{"task": n, "short": _short(n), "priority": None,
                                 "count": c} for n, c in groups.most_common()],
                    "sampled": SAMPLE if total > SAMPLE else None},
        "scheduled": {"total": huey.scheduled_count(), "items": items},
        "revoked": {"ids": [], "names": []},
        "paused": [], "limits": [], "unique_keys": 0,
    }


def _pending(huey, curs, queue):
    total = curs.execute("select count(*) from {task} where queue = ?",
                         (queue,)).fetchone()[0]
    by_priority = [{"priority": p, "count": n} for p, n in curs.execute(
        "select priority, count(*) from {task} where queue = ? "
        "group by priority order by priority desc", (queue,))]
    rows = curs.execute("select data, priority from {task} where queue = ? "
                        "order by id limit %d" % SAMPLE, (queue,)).fetchall()
    groups = collections.Counter()
    oldest_id = None
    for data, priority in rows:
        task_id, name = _message(huey, data)
        if oldest_id is None:
            oldest_id = task_id
        groups[(name, priority)] += 1
    by_name = [{"task": name, "short": _short(name), "priority": priority,
                "count": n}
               for (name, priority), n in sorted(
                   groups.items(), key=lambda kv: (-kv[1], str(kv[0])))]
    return {"total": total, "by_priority": by_priority, "by_name": by_name,
            "sampled": len(rows) if total > len(rows) else None,
            "oldest_id": oldest_id}


def _scheduled(huey, curs, queue):
    table = _tables(huey.storage)
    total = curs.execute("select count(*) from %s where queue = ?" % table,
                         (queue,)).fetchone()[0]
    items = []
    for data, stamp in curs.execute(
            "select data, timestamp from %s where queue = ? "
            "order by timestamp limit %d" % (table, SHOWN), (queue,)):
        task_id, name = _message(huey, data)
        items.append({"task_id": task_id, "task": name, "short": _short(name),
                      "due": schedule_time(stamp, getattr(huey, "utc", True))})
    return {"total": total, "items": items}


def _paused(curs, queue):
    """The task names consumers do not take now (``*``: the whole queue)."""
    return [dict(p, short="every task" if p["task"] == ALL else _short(p["task"]))
            for p in paused_in(curs, queue)]


def _limits(curs, queue):
    """Concurrency slots in use or waited for: [{"slot", "running", "limit",
    "waiting"}] (see :mod:`hueyscope.queue.control`)."""
    return [item for _, item in concurrency_slots(curs, "{task}", queue)]


def _revoked(curs, queue):
    """Revocations in force: by task id (``r:``) and by task name (``rt:``)."""
    ids, names = [], []
    for (key,) in curs.execute(
            "select key from {kv} where queue = ? and (key like ? or key like ?) "
            "order by key limit %d" % SHOWN, (queue, "r:%", "rt:%")):
        key = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        if key.startswith("rt:"):
            names.append({"task": key[3:], "short": _short(key[3:])})
        else:
            ids.append(key[2:])
    return {"ids": ids, "names": names}


def _leased(huey, curs, queue, now, lease_timeout):
    rows = holders(curs)
    dead = dead_holders(rows, lease_timeout)
    who = holder_describer(rows, lease_timeout, now)

    running = []
    for data, holder, taken in curs.execute(
            "select data, holder, taken from hueyscope_lease where queue = ? "
            "order by taken", (queue,)):
        task_id, name = _message(huey, data)
        running.append(dict(who(holder), task_id=task_id, task=name,
                            short=_short(name), elapsed=round(now - taken, 1)))
    leases = collections.Counter(r["holder"] for r in running)
    consumers = [{"holder": h.id, "host": h.hostname, "pid": h.pid,
                  "run_id": h.run_id, "started": h.started,
                  "heartbeat": h.heartbeat,
                  "heartbeat_age": round(now - h.heartbeat, 1),
                  "alive": h.id not in dead,
                  "dead_because": dead[h.id][1] if h.id in dead else None,
                  "leases": leases.get(h.id, 0)}
                 for h in sorted(rows, key=lambda h: (h.id not in dead, -h.started))]
    locks = [dict(who(holder), lock=key.split(LOCK_MARK, 1)[-1], worker=worker,
                  age=round(now - taken, 1))
             for key, holder, worker, taken in curs.execute(
                 "select key, holder, worker, taken from hueyscope_lock "
                 "where queue = ? order by taken", (queue,))]
    failed = [{"fingerprint": fp, "task": task, "short": _short(task),
               "kind": kind, "error_type": error_type, "count": n,
               "first": first, "last": last}
              for fp, task, kind, error_type, n, first, last in curs.execute(
                  "select fingerprint, task, kind, max(error_type), count(*), "
                  "min(parked), max(parked) from hueyscope_dead_letter "
                  "where queue = ? group by fingerprint, task, kind "
                  "order by count(*) desc, max(parked) desc", (queue,))]
    return {"running": running, "consumers": consumers, "locks": locks,
            "failed": failed, "failed_total": sum(g["count"] for g in failed),
            "dead_count": sum(1 for c in consumers if not c["alive"])}


def lease_of(huey, task_id, lease_timeout):
    """The lease of ``task_id`` while it runs: its holder and age, or None."""
    if not getattr(huey.storage, "leased", False):
        return None
    with huey.storage.db() as raw:
        leased = _leased(huey, QueueCursor(huey.storage, raw), huey.storage.name,
                         time.time(), lease_timeout)
    for item in leased["running"]:
        if item["task_id"] == task_id:
            return item
    return None
