"""Storage calls on PostgreSQL run again when their transaction failed on a transient error.

A deadlock, a serialization failure, a lock not available, a dropped
connection: the call's transaction was rolled back, so it is run again after
a short backoff, :data:`ATTEMPTS` times in all. :func:`with_retries` wraps
the storage methods of :data:`RETRIED` of a class that mixes in
:class:`RetryingCalls`.
"""
import functools
import logging
import random
import threading
import time

try:
    import psycopg
    from psycopg import errors as _errors
except ImportError:  # the postgres extra is not installed
    psycopg = None

logger = logging.getLogger("hueyscope.postgres")

# Transient failures: a storage call is run again, ATTEMPTS times in all,
# BACKOFF seconds (doubled at each attempt, with jitter) apart.
ATTEMPTS = 5
BACKOFF = 0.05
RETRIED = (
    "enqueue", "_dequeue", "queue_size", "enqueued_items", "flush_queue",
    "add_to_schedule", "read_schedule", "schedule_size", "scheduled_items",
    "flush_schedule", "put_data", "peek_data", "peek_many", "pop_data",
    "has_data_for_key", "put_if_empty", "delete_data", "incr",
    "delete_counter", "result_store_size", "result_items", "flush_results",
    "flush_counters", "flush_all", "sql", "enqueue_unclaimed",
    "park_current", "release_pending")


def transient(exc, connection_lost=False):
    """True if a transaction that failed with ``exc`` may succeed if run again.

    A deadlock, a serialization failure, a lock not available; or any
    OperationalError that left the connection it ran on broken (the server
    restarted, the network dropped): the next attempt opens a new one.
    """
    if psycopg is None or not isinstance(exc, psycopg.OperationalError):
        return False
    if isinstance(exc, (_errors.DeadlockDetected, _errors.SerializationFailure,
                        _errors.LockNotAvailable)):
        return True
    return connection_lost or server_ended(exc)


# SQLSTATE classes and codes of a connection the server ended: 08 (connection
# exception), 57P01-57P03 (terminated by an administrator, a crash, a server
# not yet accepting connections).
_ENDED_CLASS = "08"
_ENDED_CODES = ("57P01", "57P02", "57P03")


def server_ended(exc):
    """True if ``exc`` says the server ended the connection it ran on.

    The server sends its error and then closes the socket; psycopg may raise
    the error before it has seen the close, with the connection not yet
    marked broken. The error's code says so all the same.
    """
    code = getattr(getattr(exc, "diag", None), "sqlstate", None) or \
        getattr(exc, "sqlstate", None)
    return bool(code) and (code.startswith(_ENDED_CLASS) or code in _ENDED_CODES)


def retried(fn):
    """``fn``, a storage method, run again on a transient failure (see RetryingCalls)."""
    if getattr(fn, "retried", False):
        return fn

    @functools.wraps(fn)
    def method(self, *args, **kwargs):
        return self.call_with_retries(fn, self, *args, **kwargs)

    method.retried = True
    return method


def with_retries(cls):
    """Class decorator: every method of :data:`RETRIED` that ``cls`` has, retried."""
    for name in RETRIED:
        fn = getattr(cls, name, None)
        if fn is not None:
            setattr(cls, name, retried(fn))
    return cls


class RetryingCalls:
    """Runs storage calls again when their transaction failed on a transient error.

    A failed call's transaction was rolled back (huey's ``db()`` does it,
    and the leased one puts back the leases it was to release), so running
    the whole call again is safe; only the outermost storage call of a
    thread retries (calls made inside it fail with it). A call that failed
    on a dropped connection may have committed before the connection
    dropped: running it again is at-least-once, as delivery is.
    """

    def _retry_state(self):
        state = self.__dict__.get("_retry_local")
        if state is None:
            state = self.__dict__.setdefault("_retry_local", threading.local())
        return state

    def call_with_retries(self, fn, *args, **kwargs):
        state = self._retry_state()
        if getattr(state, "active", False):
            return fn(*args, **kwargs)
        state.active = True
        try:
            for attempt in range(1, ATTEMPTS + 1):
                saved = self._attempt_state()
                try:
                    return fn(*args, **kwargs)
                except Exception as exc:
                    if attempt == ATTEMPTS or not transient(exc, self._connection_lost()):
                        raise
                    if server_ended(exc):
                        self._drop_connection()  # the next attempt opens a new one
                    self._restore_attempt_state(saved)
                    delay = BACKOFF * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
                    logger.warning("%s failed (%s: %s); attempt %d of %d in %.2f s.",
                                   fn.__name__, type(exc).__name__,
                                   _first_line(exc), attempt + 1, ATTEMPTS, delay)
                    time.sleep(delay)
        finally:
            state.active = False

    def _connection_lost(self):
        conn = self._conn
        return conn is not None and (conn.closed or conn.broken)

    def _drop_connection(self):
        pass

    def _attempt_state(self):
        return None

    def _restore_attempt_state(self, saved):
        pass


def _first_line(exc):
    return (str(exc).strip().splitlines() or [""])[0]
