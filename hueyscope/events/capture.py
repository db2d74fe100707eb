"""Capture: a buffered signal made into the plain values the writer takes.

The signal handler (:meth:`hueyscope.events.recorder.Recorder._on_signal`)
buffers a :data:`~hueyscope.events.columns.CAPTURED` tuple and returns; the
recorder's writer thread turns it into a
:data:`~hueyscope.events.columns.SIGNAL` tuple here, off huey's workers:
the error and its traceback formatted and redacted, the arguments dumped
as JSON with secrets redacted (:mod:`hueyscope.redaction`) and long values
truncated, the eta as unix seconds.
"""
import calendar
import json
import traceback

from hueyscope import storable
from hueyscope.redaction import Redaction
from hueyscope.signals import fingerprint

# Signals whose pipeline steps are recorded with them: those the enqueue
# made waiting, or the failed enqueue left never queued.
CHAIN_SIGNALS = frozenset(("enqueued", "not-queued"))


def plain(item, capture, redaction, limit, utc=True):
    """A buffered signal (``item``, :data:`~hueyscope.events.columns.CAPTURED`)
    as the plain tuple the writer takes
    (:data:`~hueyscope.events.columns.SIGNAL`).

    This is all the recording process does per signal besides the handler:
    read the task's fields, format an error, dump the arguments as JSON,
    all of it redacted by ``redaction`` (a :class:`~hueyscope.redaction.
    Redaction`). ``utc`` is the Huey's own setting: whether its etas are
    naive UTC or naive local time.
    """
    # Unpacked and built in the order of CAPTURED and SIGNAL.
    ts, signal, task, retries, priority, eta, duration, exc, worker, run_id = item
    error_type = error = tb_text = fp = None
    if exc is not None:
        error_type = type(exc).__name__
        # The failed set fingerprints the same redacted message
        # (hueyscope.queue.leases): a group in the report is a group there.
        error = redaction.message(storable.str_of(exc))
        tb = exc.__traceback__
        tb_text = redaction.traceback(
            "".join(traceback.format_exception(type(exc), exc, tb)))
        fp = fingerprint(error_type, error, tb)
    # Arguments do not change between signals: store them where a reader
    # looks for them (what was enqueued, what ran, what failed).
    if capture and (signal in ("enqueued", "executing") or exc is not None):
        args = _dump(task.args, redaction, limit)
        kwargs = _dump(task.kwargs, redaction, limit)
    else:
        args = kwargs = None
    chain = None
    if signal in CHAIN_SIGNALS and task.on_complete is not None:
        chain, parent, child = [], task, task.on_complete
        while child is not None:
            chain.append((child.id, child.name, child.priority, parent.id))
            parent, child = child, child.on_complete
    return (ts, signal, task.id, task.name, retries, priority,
            _timestamp(eta, utc) if eta is not None else None, duration,
            error_type, error, tb_text, fp, args, kwargs, worker, chain, run_id)


# A value JSON has no type for is stored as its repr; a repr that raises,
# as a placeholder that says so (storable.repr_of).
_encode = json.JSONEncoder(default=storable.repr_of, ensure_ascii=False).encode


def _dump(value, redaction, limit):
    """JSON text of ``value`` redacted; non-JSON values as repr; truncated.

    Text longer than ``limit`` becomes :func:`_truncated`. Never raises: a
    value that cannot be copied at all is stored as its repr (scrubbed as
    text), or as ``<unrepresentable ...>``.
    """
    redaction = Redaction.of(redaction)
    try:
        text = _encode(redaction.value(value))
    except Exception:  # a container whose items() raises...
        text = _encode(redaction.text(storable.repr_of(value)))
    if limit and len(text) > limit:
        return _truncated(text, limit)
    return text


def _truncated(text, limit):
    """The first ``limit`` or so characters of JSON ``text``, as a JSON string.

    Cut JSON is no JSON: one such row would make every json_extract() over
    the column fail. Stored as a string, it stays valid, and it says what it
    is: args are otherwise an array, kwargs an object. Escaping the quotes
    of the kept part lengthens it, so it is cut until the string's content
    fits in ``limit`` plus the note.
    """
    keep = limit
    while True:
        note = "...[truncated %d chars]" % (len(text) - keep)
        out = _encode(text[:keep] + note)
        kept = len(out) - 2 - len(note)  # the kept part, escaped
        if kept <= limit:
            return out
        keep = keep * limit // kept


def _timestamp(value, utc=True):
    """Unix seconds of a huey eta.

    huey's etas are naive datetimes: UTC when the Huey has ``utc=True`` (the
    default), the machine's local time when it has ``utc=False``. An aware
    one says its own zone.
    """
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if value.tzinfo is not None or not utc:
        return value.timestamp()  # a naive value is taken as local time
    return calendar.timegm(value.utctimetuple()) + value.microsecond / 1e6
