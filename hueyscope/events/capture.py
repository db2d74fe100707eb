"""Capture: a buffered signal made into the plain values the writer takes.

The signal handler (:meth:`hueyscope.events.recorder.Recorder._on_signal`)
buffers a :data:`~hueyscope.events.columns.CAPTURED` tuple and returns; the
recorder's writer thread turns it into a
:data:`~hueyscope.events.columns.SIGNAL` tuple here, off huey's workers:
the error formatted, the arguments dumped as JSON with secrets redacted and
long values truncated, the eta as unix seconds.
"""
import calendar
import json
import traceback

from hueyscope import settings as _settings
from hueyscope import storable
from hueyscope.signals import fingerprint

DEFAULT_REDACT = tuple(_settings.DEFAULT_REDACT.split(","))
REDACTED = "***"
# Signals whose pipeline steps are recorded with them: those the enqueue
# made waiting, or the failed enqueue left never queued.
CHAIN_SIGNALS = frozenset(("enqueued", "not-queued"))


def plain(item, capture, keys, limit, utc=True):
    """A buffered signal (``item``, :data:`~hueyscope.events.columns.CAPTURED`)
    as the plain tuple the writer takes
    (:data:`~hueyscope.events.columns.SIGNAL`).

    This is all the recording process does per signal besides the handler:
    read the task's fields, format an error, dump the arguments as JSON.
    ``utc`` is the Huey's own setting: whether its etas are naive UTC or
    naive local time.
    """
    # Unpacked and built in the order of CAPTURED and SIGNAL.
    ts, signal, task, retries, priority, eta, duration, exc, worker, run_id = item
    error_type = error = tb_text = fp = None
    if exc is not None:
        error_type = type(exc).__name__
        error = storable.str_of(exc)[:4000]
        tb = exc.__traceback__
        tb_text = "".join(traceback.format_exception(type(exc), exc, tb))[-20000:]
        fp = fingerprint(error_type, error, tb)
    # Arguments do not change between signals: store them where a reader
    # looks for them (what was enqueued, what ran, what failed).
    if capture and (signal in ("enqueued", "executing") or exc is not None):
        args = _dump(task.args, keys, limit)
        kwargs = _dump(task.kwargs, keys, limit)
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




_CONTAINERS = (dict, list, tuple)


def _redact(value, keys, depth=0):
    """A copy of ``value`` with the values of secret-looking keys replaced."""
    if depth > 8:
        return value
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and k.lower() in keys
                    else _redact(v, keys, depth + 1)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact(v, keys, depth + 1) for v in value]
    return value


def _needs_redaction(values):
    # The common case -- a few scalars -- needs no copy: only a container
    # can hold a key to redact.
    for v in values:
        if isinstance(v, _CONTAINERS):
            return True
    return False


# A value JSON has no type for is stored as its repr; a repr that raises,
# as a placeholder that says so (storable.repr_of).
_encode = json.JSONEncoder(default=storable.repr_of, ensure_ascii=False).encode


def _dump(value, keys, limit):
    """JSON text of ``value`` with redaction; non-JSON values as repr; truncated.

    Text longer than ``limit`` becomes :func:`_truncated`. Never raises: a
    value that cannot be encoded at all is stored as its repr, or as
    ``<unrepresentable ...>``.
    """
    try:
        if isinstance(value, dict):
            if value and (_needs_redaction(value.values()) or any(
                    isinstance(k, str) and k.lower() in keys for k in value)):
                value = _redact(value, keys)
        elif _needs_redaction(value):
            value = _redact(value, keys)
        text = _encode(value)
    except Exception:  # a recursive structure, keys JSON cannot take...
        text = _encode(storable.repr_of(value))
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
