"""Rows from signals: a batch of signals as events, tasks and roll-up rows.

The writer (:mod:`hueyscope.events.writer`) takes signals as plain tuples
(:data:`~hueyscope.events.columns.SIGNAL`) and writes the rows built here
in one transaction. Event and task rows are lists in the order of
:data:`~hueyscope.events.columns.EVENT` and
:data:`~hueyscope.events.columns.TASK`, read and completed by column name.
"""
from hueyscope import storable
from hueyscope.events.columns import EVENT, ROLLUP, SIGNAL, TASK

# Signals after which a task will not run again unless huey retries it.
FINAL_STATUS = {
    "complete": "complete",
    "error": "failed",
    "locked": "locked",
    "revoked": "revoked",
    "expired": "expired",
    "canceled": "canceled",
    "interrupted": "interrupted",
    "timeout": "timeout",
    "rate-limited": "rate-limited",
    "lost": "lost",  # parked by recovery after too many deaths
    "dropped": "dropped",  # the consumer does not have the task
    "not-queued": "not-queued",  # the enqueue raised: never in the queue
    "deduplicated": "deduplicated",  # its unique key was held: not enqueued
}
# Signals that make a task ready to run (again).
READY_SIGNALS = ("enqueued", "scheduled", "recovered", "requeued")
# Signals that say something of a task and leave its status as it is.
NOTE_SIGNALS = ("revoke", "restore", "discard", "pause", "resume")
STATUS = dict(FINAL_STATUS, enqueued="enqueued", scheduled="scheduled",
              executing="executing", retrying="retrying", recovered="enqueued",
              requeued="enqueued", **{s: "waiting" for s in NOTE_SIGNALS})


def storable_batch(plains):
    """``plains`` with every value in a form the store takes (see storable).

    Deterministic, so a value stored this way in one batch is stored the
    same way in every other: a run id or a task name with a lone surrogate
    still joins its rows.
    """
    out = []
    for p in plains:
        chain = p[SIGNAL.chain]
        if chain:
            chain = [storable.row(step) for step in chain]
        out.append(storable.row(p[:SIGNAL.chain]) + (chain,)
                   + storable.row(p[SIGNAL.chain + 1:]))
    return out


def batch_rows(plains, run_id, host, pid, queue):
    """(events rows, tasks rows, rollup, late task ids) for one batch.

    All of a batch's signals for one task fold into a single ``tasks`` row
    (see :func:`_fold`), so the table and its indexes are touched once per
    task per batch, not once per signal. Event rows are finished by
    :func:`finish_events` once the tasks rows are written.
    """
    events, late = [], []
    tasks = {}
    rollup = {}
    named = []  # events about every task of a name: no task row, no seq
    # Rows are built in the order of their Columns (EVENT, TASK, and the
    # signal unpacked in SIGNAL's); read and edited by name after that.
    for (ts, signal, task_id, name, retries, priority, eta_ts, duration,
         error_type, error, tb_text, fp, args, kwargs, worker, chain,
         own_run) in plains:
        if task_id is None:
            named.append([ts, own_run or run_id, queue, None, name, signal,
                          None, retries, priority, eta_ts, duration, None,
                          error_type, error, tb_text, fp, args, kwargs, host,
                          pid, worker, None])
            continue
        executing = signal == "executing"
        ready = max(ts, eta_ts or 0) if signal in READY_SIGNALS else None
        finished = ts if signal in FINAL_STATUS else None
        event_run = own_run or run_id
        # A note (a revoke, a discard) says why in its event only: the
        # task keeps the error of its last attempt.
        note = signal in NOTE_SIGNALS
        row = [task_id, name, queue, STATUS[signal],
               ts if signal == "enqueued" else None, ready,
               ts if executing else None, finished, 1 if executing else 0,
               duration, None if note else error_type, None if note else error,
               None if note else fp, priority, eta_ts, None,
               event_run if (executing or finished) else None, ts, None, None]
        current = tasks.get(task_id)
        if current is None:
            tasks[task_id] = row
        else:
            _fold(current, row)
            row = current
        wait = row[TASK.wait] if executing else None
        # Executions of this task so far in this batch (plus one for the
        # execution an enqueue or schedule leads to); made absolute by
        # finish_events once the batch's total is known.
        executions = row[TASK.attempts] + (signal in READY_SIGNALS)
        events.append([ts, event_run, queue, task_id, name, signal, executions,
                       retries, priority, eta_ts, duration, wait, error_type,
                       error, tb_text, fp, args, kwargs, host, pid, worker,
                       None])
        if signal == "enqueued":
            late.append(task_id)
        if chain:
            _add_pipeline(tasks, chain, signal, queue, ts)
        _add_to_rollup(rollup, ts, name, signal, duration)
    for event in events:
        event[EVENT.attempt] -= tasks[event[EVENT.task_id]][TASK.attempts]
    return events + named, list(tasks.values()), rollup, late


def _add_pipeline(tasks, chain, signal, queue, ts):
    """A pipeline's later steps exist now, waiting on this one -- or, when
    the enqueue raised, will never run: a task row each, in ``tasks``."""
    status = "waiting" if signal == "enqueued" else "not-queued"
    for child_id, child_name, child_priority, parent_id in chain:
        waiting = [child_id, child_name, queue, status, None, None,
                   None, None, 0, None, None, None, None,
                   child_priority, None, parent_id, None, ts, None,
                   None]
        if child_id in tasks:
            _fold(tasks[child_id], waiting)
        else:
            tasks[child_id] = waiting


def _add_to_rollup(rollup, ts, name, signal, duration):
    """Count the signal in its hour's roll-up, with its duration."""
    key = (_hour(ts), name, signal)
    agg = rollup.get(key)
    if agg is None:
        agg = rollup[key] = [0, 0.0, 0.0, 0.0]
    agg[ROLLUP.count] += 1
    if duration is not None:
        agg[ROLLUP.duration_sum] += duration
        if duration > agg[ROLLUP.duration_max]:
            agg[ROLLUP.duration_max] = duration


def _hour(ts):
    """The start of the roll-up hour ``ts`` falls in (rollup_hourly.hour)."""
    return (ts // 3600) * 3600


def finish_events(events, current, rollup, late):
    """Complete a batch's event rows from the tasks rows as now stored.

    ``current`` maps task id to ``(seq, attempts, wait, started)`` after the
    batch's upsert. Each event gets its task's sequence number, its attempt
    made absolute (executions before this batch, from any process, plus its
    own), and each execution whose wait this batch could not compute gets
    the task's. Waits go into the hourly roll-up. Returns the
    ``(wait, task_seq)`` updates for executions recorded earlier than their
    task's enqueue (a producer that flushed late), and the enqueue events
    whose attempt
    :data:`~hueyscope.events.statements.EXECUTIONS_BEFORE` must count.
    """
    executed = {event[EVENT.task_id] for event in events
                if event[EVENT.signal] == "executing"}
    recount = []
    for event in events:
        task_id = event[EVENT.task_id]
        if task_id is None:
            continue  # about a task name, not a task
        seq, attempts, wait, started = current[task_id]
        event[EVENT.task_seq] = seq
        event[EVENT.attempt] += attempts
        signal = event[EVENT.signal]
        if signal == "executing":
            if event[EVENT.wait] is None:
                event[EVENT.wait] = wait
            if event[EVENT.wait] is not None:
                rollup[(_hour(event[EVENT.ts]), event[EVENT.task],
                        "executing")][ROLLUP.wait_sum] += event[EVENT.wait]
        elif (signal in ("enqueued", "scheduled") and started is not None
              and started > event[EVENT.ts] and task_id not in executed):
            # Executions recorded before this enqueue happened after it: the
            # attempt it leads to counts only the executions that preceded it.
            recount.append(event)
    updates = []
    for task_id in late:
        seq, _, wait, started = current[task_id]
        if started is not None and wait is not None and task_id not in executed:
            updates.append((wait, seq))
    return updates, recount


def _fold(row, new):
    """Fold a later signal's tasks row into an earlier one of the same batch.

    Applying the folded row with
    :data:`~hueyscope.events.statements.UPSERT_TASK` gives what applying both rows
    in order would: first non-null for names and parent, earliest enqueue,
    latest for times, status and errors, attempts summed, ``finished``
    cleared by a later start, and the wait of an execution whose ready time
    is in this batch computed here.
    """
    for i in _FIRST:
        if row[i] is None:
            row[i] = new[i]
    if new[TASK.parent_id] is not None:
        # A rescheduled step is its next step's parent.
        row[TASK.parent_id] = new[TASK.parent_id]
    if new[TASK.status] != "waiting":
        row[TASK.status] = new[TASK.status]
    enqueued = new[TASK.enqueued]
    if enqueued is not None and (row[TASK.enqueued] is None
                                 or enqueued < row[TASK.enqueued]):
        row[TASK.enqueued] = enqueued
    started = new[TASK.started]
    if started is not None:
        ready = row[TASK.ready]
        row[TASK.wait] = max(started - ready, 0.0) if ready is not None \
            else None
        row[TASK.started] = started
        row[TASK.finished] = None
    if new[TASK.ready] is not None:
        row[TASK.ready] = new[TASK.ready]
    if new[TASK.finished] is not None:
        row[TASK.finished] = new[TASK.finished]
    row[TASK.attempts] += new[TASK.attempts]
    for i in _LATEST:
        if new[i] is not None:
            row[i] = new[i]
    if new[TASK.updated] > row[TASK.updated]:
        row[TASK.updated] = new[TASK.updated]


# Columns of a tasks row that keep their first value, and those that take
# the latest one given.
_FIRST = (TASK.task, TASK.queue)
_LATEST = (TASK.duration, TASK.error_type, TASK.error, TASK.fingerprint,
           TASK.priority, TASK.eta, TASK.run_id)
