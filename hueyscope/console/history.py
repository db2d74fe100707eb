"""What the event store says of one task, and of the tasks the Now page lists.

Read through Datasette's own read-only connection to the store (``db`` is a
:class:`datasette.database.Database`), by the indexes the store keeps:
``tasks`` by its primary key and ``events`` by ``task_seq``, so a page
costs a few index lookups however large the store is.
"""
import json

EVENT_COLUMNS = ("id", "ts", "signal", "attempt", "retries_left", "priority",
                 "eta", "duration", "wait", "error_type", "error", "traceback",
                 "fingerprint", "args", "kwargs", "host", "pid", "worker",
                 "run_id")
TERMINAL = ("complete", "error", "locked", "canceled", "interrupted",
            "timeout", "rate-limited", "revoked", "expired", "lost", "dropped")
CHAIN_LIMIT = 50  # steps followed either way along a pipeline


async def _rows(db, sql, params=()):
    return [dict(row) for row in (await db.execute(sql, params)).rows]


async def task_row(db, task_id):
    rows = await _rows(db, "select * from tasks where task_id = ?", (task_id,))
    return rows[0] if rows else None


async def events_of(db, task):
    """Every event of ``task`` (a tasks row) in the order it happened."""
    if task.get("seq") is None:
        return []
    return await _rows(db, "select %s from events where task_seq = ? "
                       "order by ts, id" % ", ".join(EVENT_COLUMNS), (task["seq"],))


def attempts(events):
    """One entry per attempt: when it started, its wait, run time and outcome."""
    out, current = [], None
    for e in events:
        if e["signal"] == "executing":
            current = {"attempt": e["attempt"], "started": e["ts"],
                       "wait": e["wait"], "duration": None, "outcome": "running",
                       "worker": e["worker"], "host": e["host"], "pid": e["pid"]}
            out.append(current)
        elif current is not None and e["signal"] in TERMINAL:
            current.update(outcome=e["signal"], duration=e["duration"])
            current = None
    return out


def arguments(events):
    """(args, kwargs) as recorded (redacted and cut by the recorder), or None."""
    for e in events:
        if e["args"] is not None or e["kwargs"] is not None:
            return e["args"], e["kwargs"]
    return None


def failures(events):
    return [e for e in events if e["signal"] == "error" or e["traceback"]]


def actions(events):
    """Events an operator asked for: revoke, restore, requeued, recovered."""
    return [e for e in events if e["signal"] in
            ("revoke", "restore", "requeued", "recovered", "lost", "discard")]


async def pipeline(db, task):
    """The chain ``task`` belongs to, first step first: [{task_id, task, status}]."""
    if task is None:
        return []
    up, row, seen = [], task, {task["task_id"]}
    while row.get("parent_id") and len(up) < CHAIN_LIMIT:
        parent = await _rows(db, "select task_id, task, status, parent_id from "
                             "tasks where task_id = ?", (row["parent_id"],))
        if not parent or parent[0]["task_id"] in seen:
            break
        row = parent[0]
        seen.add(row["task_id"])
        up.append(row)
    down, row = [], task
    while len(down) < CHAIN_LIMIT:
        child = await _rows(db, "select task_id, task, status, parent_id from "
                            "tasks where parent_id = ? limit 1", (row["task_id"],))
        if not child or child[0]["task_id"] in seen:
            break
        row = child[0]
        seen.add(row["task_id"])
        down.append(row)
    if not up and not down:
        return []
    this = {k: task.get(k) for k in ("task_id", "task", "status", "parent_id")}
    return list(reversed(up)) + [dict(this, current=True)] + down


async def enqueued_at(db, task_id):
    """When ``task_id`` was enqueued, per the store (None if unknown)."""
    if not task_id:
        return None
    rows = await _rows(db, "select enqueued from tasks where task_id = ?", (task_id,))
    return rows[0]["enqueued"] if rows else None


async def workers(db, task_ids):
    """{task id: worker} of the latest executing event of each task."""
    found = {}
    for task_id in task_ids:
        if not task_id:
            continue
        rows = await _rows(
            db, "select worker from events where task_seq = (select seq from "
            "tasks where task_id = ?) and signal = 'executing' "
            "order by ts desc limit 1", (task_id,))
        if rows:
            found[task_id] = rows[0]["worker"]
    return found


def pretty(text):
    """JSON as recorded, indented for reading (as it is if not JSON)."""
    if text is None:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, sort_keys=True)
    except (TypeError, ValueError):
        return text


async def recent(db, limit=20):
    """The tasks that reached an outcome last, newest first (by idx_tasks_finished)."""
    return await _rows(db, "select task_id, task, status, finished, attempts "
                       "from tasks where finished is not null "
                       "order by finished desc limit %d" % int(limit))
