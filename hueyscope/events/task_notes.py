"""What a running task tells beside its signals: progress, and its log lines.

Both wait in the recorder's buffer in order with the signals, and travel
to the store in the list that carries queue samples (:func:`take_notes`):
each note is a flat tuple whose first item names its kind, where a signal
or a queue sample starts with its time. The store splits them out
(:func:`split`) and writes them in the batch's transaction, after its
events, so a log line finds the ``executing`` event of its attempt.

- ``task_progress``: the last value of each task (``hueyscope.progress``);
- ``task_logs``: log records emitted while a task ran, with its attempt
  (see :mod:`hueyscope.events.task_logs`).
"""

PROGRESS = "progress"
LOG = "log"

UPSERT_PROGRESS = """insert into task_progress (ts, task_id, task, fraction,
  message, run_id) values (?, ?, ?, ?, ?, ?)
on conflict (task_id) do update set task = excluded.task,
  fraction = excluded.fraction, message = excluded.message, ts = excluded.ts,
  run_id = excluded.run_id
where excluded.ts >= task_progress.ts"""

# The attempt is the number of executions of the task recorded up to the
# line: its own 'executing' event is in this batch or an earlier one.
INSERT_LOG = """insert into task_logs (ts, task_id, task, attempt, level,
  levelno, logger, message, run_id, pid, worker)
values (?, ?, ?, (select count(*) from events where task_seq =
  (select seq from tasks where task_id = ?) and +signal = 'executing'
  and ts <= ?), ?, ?, ?, ?, ?, ?, ?)"""


def progress_note(ts, task_id, task, fraction, message, run_id):
    return (PROGRESS, ts, task_id, task, fraction, message, run_id)


def log_note(ts, task_id, task, level, levelno, logger, message, run_id, pid,
             worker):
    return (LOG, ts, task_id, task, level, levelno, logger, message, run_id,
            pid, worker)


def take_notes(batch):
    """(signals, notes) of a batch of the recorder's buffer.

    Notes wait in the buffer with the signals, so that each follows the
    signals emitted before it; a signal starts with its time, a note with
    its kind.
    """
    for item in batch:
        if type(item[0]) is str:
            break
    else:
        return batch, []  # the common case: signals only
    signals, notes = [], []
    for item in batch:
        (notes if type(item[0]) is str else signals).append(item)
    return signals, notes


def split(samples):
    """(queue samples, progress rows, log rows) of a batch's sample list."""
    if not samples or not any(type(s[0]) is str for s in samples):
        return samples, [], []  # the common case: no note at all
    queue, progress, logs = [], [], []
    for s in samples:
        kind = s[0]
        if kind == PROGRESS:
            progress.append(s[1:])
        elif kind == LOG:
            ts, task_id = s[1], s[2]
            logs.append((ts, task_id, s[3], task_id, ts) + tuple(s[4:]))
        else:
            queue.append(s)
    return queue, progress, logs


def write(conn, progress, logs):
    """Write the notes of a batch in its open transaction."""
    if progress:
        conn.executemany(UPSERT_PROGRESS, progress)
    if logs:
        conn.executemany(INSERT_LOG, logs)
