"""What the queue and the recorder both name, in one module under both.

The queue (:mod:`hueyscope.queue`) decides work and the recorder
(:mod:`hueyscope.events`) keeps history; neither imports the other. Both
need the signals hueyscope adds to huey's, what a handler gets for a
message whose task is unknown, and the fingerprint that groups an error
alike in the event store and the failed set.
"""
import hashlib
import os
import re
import traceback

# A process not heard from for this long is gone: a consumer run without a
# heartbeat (report, canned queries, metrics, alerts), a lease holder on
# another host (recovery's default lease timeout). One number, one place.
STALE_SECONDS = 60.0

# Signals hueyscope emits beside huey's own (huey.signals).
RECOVERED = "recovered"  # a dead holder's lease back on the queue
LOST = "lost"  # parked after too many recoveries
DROPPED = "dropped"  # a message whose task the consumer does not have
REQUEUED = "requeued"  # put back from the failed set (hueyscope retry)
NOT_QUEUED = "not-queued"  # an enqueue that raised


class UnknownTask:
    """What a signal handler needs of a message no task can be built from."""

    on_complete = on_error = None

    def __init__(self, message):
        # A message names its task as huey's registry does (module.name);
        # the recorder knows tasks by the name alone, as huey's Task does.
        self.id, self.name = message.id, message.name.rsplit(".", 1)[-1]
        self.retries, self.priority, self.eta = (
            message.retries, message.priority, message.eta)
        self.args, self.kwargs = message.args, message.kwargs


_NORMALISE = (
    (re.compile(r"0x[0-9a-fA-F]+"), "0x?"),
    (re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F-]{27,}"), "<uuid>"),
    (re.compile(r"'[^']*'|\"[^\"]*\""), "<str>"),
    (re.compile(r"\d+(\.\d+)?"), "<n>"),
)


def fingerprint(error_type, message, tb):
    """Stable hash of error type + normalised message + innermost frame.

    Numbers, quoted strings, hex addresses and uuids are normalised away so
    "timeout after 3.2s" and "timeout after 4.7s" group together.
    """
    for pattern, repl in _NORMALISE:
        message = pattern.sub(repl, message or "")
    frame = ""
    if tb is not None:
        last = traceback.extract_tb(tb)[-1:]
        if last:
            frame = "%s:%s" % (os.path.basename(last[0].filename), last[0].name)
    key = "\n".join((error_type or "", message[:500], frame))
    return hashlib.sha1(key.encode("utf-8", "replace")).hexdigest()[:16]


