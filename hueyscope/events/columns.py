"""The rows that travel from the recorder to the writer, column by column.

A signal is captured in the recording process (:data:`CAPTURED`), turned
into plain values there (:data:`SIGNAL`, with a pipeline's later steps as
:data:`CHAIN_STEP`), sent to the writer, and becomes an ``events`` row
(:data:`EVENT`) and a ``tasks`` row (:data:`TASK`). Rows stay plain tuples
and lists -- the cheapest to build in huey's workers, to pickle to the
writer process and to bind to SQL -- and code reads and edits them by
name: ``row[TASK.wait]``.

The ``events`` and ``tasks`` columns are those of the tables (see
:mod:`hueyscope.events.schema`, which names these here too); the writer's
statements are built from them. This module imports nothing, so the writer
process, which never imports sqlite-utils, can use it.
"""


class Columns:
    """The columns of one kind of row, in order.

    ``names`` is the tuple of column names; each name is also an attribute
    holding the column's position in a row.
    """

    def __init__(self, names):
        self.names = tuple(names.split())
        for position, name in enumerate(self.names):
            setattr(self, name, position)

    def __len__(self):
        return len(self.names)

    def __iter__(self):
        return iter(self.names)

    def __repr__(self):
        return "Columns(%r)" % " ".join(self.names)


# A signal as the handler buffers it, in huey's worker: the task itself and
# the exception, read later by the writer thread. ``run_id`` names another
# run than the process's own (a recovered or reconciled task's), else None.
CAPTURED = Columns("ts signal task retries priority eta duration exc worker "
                   "run_id")

# A signal as the writer takes it: plain values only. ``args`` and
# ``kwargs`` are JSON text (or None); ``chain`` lists the later steps of a
# pipeline (CHAIN_STEP), or is None; ``run_id`` (normally None: the batch's
# run) names another run: the dead one whose task recovery put back
# (``recovered``) or parked (``lost``), or the one a reconciled ``complete``
# belongs to.
SIGNAL = Columns("ts signal task_id task retries_left priority eta duration "
                 "error_type error traceback fingerprint args kwargs worker "
                 "chain run_id")

# One later step of a pipeline, waiting on (or never to follow) its parent.
CHAIN_STEP = Columns("task_id task priority parent_id")

# A row of the events table, as the writer inserts it.
EVENT = Columns("ts run_id queue task_id task signal attempt retries_left "
                "priority eta duration wait error_type error traceback "
                "fingerprint args kwargs host pid worker task_seq")

# A row of the tasks table, as the writer upserts it.
TASK = Columns("task_id task queue status enqueued ready started finished "
               "attempts duration error_type error fingerprint priority eta "
               "parent_id run_id updated wait seq")

# The sums of one (hour, task, signal) of a batch, added to rollup_hourly.
ROLLUP = Columns("count duration_sum duration_max wait_sum")
