"""Two outcomes huey has no signal for, put on record.

huey emits ``enqueued`` *before* it serializes and writes the message, so an
enqueue that raises (database locked, an argument pickle cannot take) leaves
a task the store shows waiting forever. And a message whose task this
process does not have (code deployed without it) makes ``Huey.dequeue``
raise after the message left the queue: huey logs it and the task is gone,
again with no signal.

:func:`install` wraps the instance's ``enqueue`` and ``dequeue`` so each
case reaches the recorder: ``not-queued`` with the error, and ``dropped``
with the reason. Both wrappers hand every other call straight through;
neither changes what huey does with the queue. hueyscope's leased
``SqliteHuey`` parks unreadable messages itself (and records them), so its
``dequeue`` is left alone.
"""
import logging

from huey.api import Huey, Task

from hueyscope.signals import UnknownTask

logger = logging.getLogger("hueyscope.recorder")


def install(huey, record):
    """Wrap ``huey.enqueue`` and ``huey.dequeue``; ``record(signal, task, exc)``."""
    enqueue = huey.enqueue

    def recording_enqueue(task):
        try:
            return enqueue(task)
        except Exception as exc:
            # A group or chord enqueues its members through this same
            # wrapper: the member that failed is recorded there, once.
            if isinstance(task, Task) and not getattr(
                    exc, "_hueyscope_recorded", False):
                record("not-queued", task, exc)
                try:
                    exc._hueyscope_recorded = True
                except Exception:
                    pass
            raise

    huey.enqueue = recording_enqueue
    if type(huey).dequeue is Huey.dequeue:
        huey.dequeue = lambda: _dequeue(huey, record)


def _dequeue(huey, record):
    # Huey.dequeue, except that a message no task can be built from is
    # recorded as dropped and logged in one line, and the worker goes on to
    # the next message instead of logging a traceback and sleeping.
    while True:
        data = huey.storage.dequeue()
        if data is None:
            return None
        try:
            return huey.deserialize_task(data)
        except Exception as exc:
            reason = "%s: %s" % (type(exc).__name__, exc)
            logger.warning("Dropped a message this consumer cannot run (%s).",
                           reason)
            try:
                message = huey.serializer.deserialize(data)
            except Exception:
                continue  # not even a message: nothing names a task
            record("dropped", UnknownTask(message), exc)
