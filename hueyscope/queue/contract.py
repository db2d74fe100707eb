"""What a leased storage must provide, whatever its engine.

huey's ``BaseStorage`` declares what a storage does for a Huey; a leased
storage (at-least-once delivery, see :mod:`hueyscope.queue.leases`) does
more, for :class:`~hueyscope.queue.leased_huey.LeasedHuey`, the consumer,
recovery, the failed set and the views. :class:`LeasedStorage` declares
that, each method raising NotImplementedError with what it must do.

A leased storage derives from :class:`~hueyscope.queue.leases.LeaseKeeping`
(what every engine does alike, written once through
:class:`~hueyscope.queue.tables.QueueCursor`), from huey's storage for its
engine, and from this class, last: huey's methods and the shared ones come
first, and a method nobody provides says so when called. Two engines do
today: :class:`~hueyscope.queue.sqlite.LeasedSqliteStorage` and
:class:`~hueyscope.queue.postgres.LeasedPostgresStorage`;
``tests/test_storage_contract.py`` drives both through this contract.
"""


class LeasedStorage:
    """The contract of a leased storage (see the module docstring)."""

    #: True: the queue keeps leases, holders, locks and the failed set.
    leased = True
    #: ``{"kv": ..., "task": ..., "tick": ...}``: the table names in this storage
    #: (huey's and the periodic claims'), as QueueCursor puts them in SQL.
    queue_tables = None
    #: The driver's parameter style: "qmark" (``?``) or "pyformat" (``%s``).
    param_style = None
    #: Whether a worker's next message is leased in the transaction that
    #: stores its result (only for consumers that put back what they took
    #: ahead when they stop: see :meth:`put_back_unstarted`).
    prefetch = False
    #: Set by ``hueyscope.attach``: releases for an outcome write outbox rows.
    record_outcomes = False
    #: A callable giving this process's run id in the event store, or None.
    run_id_source = None
    #: Set by ``hueyscope.attach``: the recorder's
    #: :class:`~hueyscope.redaction.Redaction`, which the failed set's reasons
    #: go through (None: the configured one, see ``LeaseKeeping.redactor``).
    redaction = None

    # -- schema and transactions ---------------------------------------------

    def initialize_schema(self):
        """Create huey's tables and the lease tables (``hueyscope_*``) if missing.

        The lease tables are :func:`~hueyscope.queue.tables.lease_tables`
        in the engine's column types.
        """
        raise NotImplementedError

    def db(self, commit=False, close=False):
        """A context manager yielding a cursor; with ``commit``, a transaction.

        A write transaction first deletes the leases due for release
        (:meth:`_release_in`) and commits them with the caller's writes;
        rolled back, it leaves them due (:meth:`_unrelease`).
        """
        raise NotImplementedError

    def _release_in(self, curs):
        """Delete the leases now due for release inside the open transaction.

        Those the calling thread's write releases (its task's outcome) and
        those pending for any write of the process, each with its outbox
        row; returns what :meth:`_unrelease` needs to undo it.
        """
        raise NotImplementedError

    def _unrelease(self, released):
        """The transaction that released ``released`` rolled back: due again."""
        raise NotImplementedError

    def to_blob(self, data):
        """``data`` (bytes) as the driver stores a message or a value."""
        raise NotImplementedError

    # -- leases ----------------------------------------------------------------

    def dequeue(self):
        """Take the next message, highest priority first then oldest; None if none.

        The message moves from huey's task table into ``hueyscope_lease``
        in one transaction, under this process's holder row, and is handed
        to the calling thread (``note_task`` binds it to its task).
        """
        raise NotImplementedError

    def _holder_in(self, curs):
        """This process's holder id, registered (``hueyscope_holder``) if new.

        ``curs`` is the caller's open transaction; an engine may register
        in a transaction of its own instead.
        """
        raise NotImplementedError

    def taken_seq(self):
        """The order in which this process took the calling thread's task."""
        raise NotImplementedError

    def put_back_unstarted(self):
        """Put back on the queue what was taken ahead and never handed to a
        worker; returns how many. 0 where nothing is taken ahead."""
        raise NotImplementedError

    def enqueue_unclaimed(self, tick, messages):
        """Enqueue each ``(task key, data, priority)`` of periodic ``tick``
        that no consumer claimed yet; returns the indices enqueued.

        The claim and the message are written in one transaction, so every
        consumer of the queue may try and one enqueues (see
        :mod:`hueyscope.queue.periodic`).
        """
        raise NotImplementedError

    def lock_for_recovery(self, curs):
        """Make ``curs``'s transaction the only recovery running on the queue.

        Recovery calls it first in its transaction: two recoveries must
        never put back the same lease. A storage whose write transactions
        are exclusive has nothing to do.
        """
        raise NotImplementedError
