"""Periodic tasks once per tick, however many consumers share a queue.

huey's scheduler enqueues every due periodic task in every consumer that
runs it: two consumers on one queue run ``heartbeat_minutely`` twice a
minute. Here each tick is claimed in the queue file itself: a row
``(queue, task, tick)`` in ``hueyscope_periodic_tick``, inserted in the same
exclusive transaction as the task's message. The first consumer to reach a
tick inserts both; every other one finds the row and enqueues nothing. A
consumer killed mid-transaction leaves neither, so the next consumer to look
at that minute still claims it.

Why claims and not a leader: a leader lease must be noticed dead before
another consumer takes over, so the ticks of that wait are lost (or, if the
old leader was only slow, run twice). A claim per tick needs no liveness at
all: any live consumer serves the tick, exactly once.

A tick is the minute of huey's timestamp (huey's crontab resolution), in
the Huey's own clock (UTC or local, as ``utc`` says). Claims older than
:data:`KEEP_SECONDS` are deleted as new ones are made.
"""
import logging
import time

from huey import signals as S
from huey.api import ResultGroup

from hueyscope.queue.tables import QueueCursor

logger = logging.getLogger("hueyscope.periodic")

KEEP_SECONDS = 2 * 86400
TICK_DDL = (
    "create table if not exists hueyscope_periodic_tick ("
    "queue text not null, task text not null, tick text not null, "
    "claimed real not null, primary key (queue, task, tick))")
# Written once for every engine (see tables.QueueCursor): {tick} and {task}
# are the storage's tables, ? its parameter marks.
FORGET_OLD = "delete from {tick} where queue = ? and claimed < ?"
CLAIM = ("insert into {tick} (queue, task, tick, claimed) values (?, ?, ?, ?) "
         "on conflict do nothing")
ENQUEUE = "insert into {task} (queue, data, priority) values (?, ?, ?)"


def tick_of(timestamp):
    """The tick a scheduler timestamp belongs to: its minute."""
    return timestamp.strftime("%Y-%m-%dT%H:%M")


def enqueue_unclaimed(storage, tick, messages, then=None):
    """Enqueue each ``(task key, data, priority)`` of ``tick`` no one claimed.

    One transaction claims and enqueues: on SQLite it is exclusive; on
    PostgreSQL a second consumer's claim of the same row waits for the
    first one's transaction, then finds the row and inserts nothing.
    ``then(cursor)`` runs in the transaction if anything was enqueued.
    Returns the indices of the messages enqueued.
    """
    enqueued = []
    now = time.time()
    named = getattr(storage, "_insert_message", None)
    with storage.db(commit=True) as raw:
        curs = QueueCursor(storage, raw)
        curs.execute(FORGET_OLD, (storage.name, now - KEEP_SECONDS))
        for i, (key, data, priority) in enumerate(messages):
            curs.execute(CLAIM, (storage.name, key, tick, now))
            if raw.rowcount == 1:
                if named is not None:  # a leased queue: named (queue.control)
                    named(raw, data, priority)
                else:
                    curs.execute(ENQUEUE, (storage.name, storage.to_blob(data),
                                           priority or 0))
                enqueued.append(i)
        if enqueued and then is not None:
            then(raw)
    return enqueued


class OncePerTick:
    """A Huey mixin: periodic tasks once a tick.

    huey's scheduler asks :meth:`read_periodic` for the due tasks and hands
    each to ``Huey.enqueue``. Both keep huey's contract: ``read_periodic``
    only says what is due (each task marked with its tick), and the
    enqueue of a marked task claims the tick in the transaction that writes
    its message (the storage's ``enqueue_unclaimed``, see
    :func:`enqueue_unclaimed` for SQLite). The consumer that loses the claim
    enqueues nothing and records nothing. An app's override or wrapper of
    ``enqueue`` sees every periodic task, as with huey.

    With ``utc=False`` the hour a daylight-saving fall-back repeats is
    served twice, as huey serves it: its second pass (``fold=1`` in the
    local time huey reads) is a tick of its own.
    """

    def read_periodic(self, timestamp):
        due = super().read_periodic(timestamp)
        if not due:
            return due
        if timestamp is None:
            timestamp = self._get_timestamp()
        tick = tick_of(timestamp)
        if getattr(timestamp, "fold", 0):
            tick += "+fold"  # the repeated hour of a fall-back (PEP 495)
        for task in due:
            task.hueyscope_tick = tick
        return due

    def enqueue(self, task):
        tick = getattr(task, "hueyscope_tick", None)
        claim = getattr(self.storage, "enqueue_unclaimed", None)
        if tick is None or claim is None or self._immediate:
            return super().enqueue(task)
        if task.expires:
            task.resolve_expires(self.utc)
        key = self._registry.task_to_string(type(task))
        # Stamped before the write: a worker may run and finish the task
        # before the signal below, and 'enqueued' must not come after that.
        stamp = time.time()
        if not claim(tick, [(key, self.serialize_task(task), task.priority)]):
            logger.debug("Periodic task %s of %s: enqueued by another "
                         "consumer.", task, tick)
            return None
        # huey emits 'enqueued' before it writes; a tick is only known to
        # be this consumer's once written.
        task.hueyscope_ts = stamp  # the recorder's time of the event
        self._emit(S.SIGNAL_ENQUEUED, task)
        if not self.results:
            return None
        results = self._pipeline_results(task)
        return ResultGroup(results) if len(results) > 1 else results[0]
