"""Messages written with what queue.control needs: name, unique key, slot.

:class:`ControlledMessages` is part of every leased storage (through
:class:`~hueyscope.queue.leases.LeaseKeeping`): it writes a message with its
task's name, unique key and concurrency slot, takes a unique key in the
enqueue's transaction, and drops the key in the transaction that releases
its holder's lease for good (see :mod:`hueyscope.queue.control`).
"""
import time

from hueyscope.queue.tables import QueueCursor


class ControlledMessages:
    """Messages named, unique keys taken and dropped (see the module docstring).

    Its state (``_unique_leases``, ``_unique_drop``) is set up by
    ``LeaseKeeping._reset_lease_state``.
    """

    #: Set by LeasedHuey: what the queue writes beside a message, read from
    #: it: (task name, concurrency slot, limit) (see queue.control).
    describe = None

    def _insert_message(self, curs, data, priority, unique=None):
        """Write ``data`` on the queue, inside the open transaction, with its
        task's name, unique key and concurrency slot (queue.control)."""
        name, slot, limit = (self.describe(data) if self.describe is not None
                             else (None, None, None))
        QueueCursor(self, curs).execute(
            "insert into {task} (queue, data, priority, hueyscope_name, "
            "hueyscope_unique, hueyscope_slot, hueyscope_limit) "
            "values (?, ?, ?, ?, ?, ?, ?)",
            (self.name, self.to_blob(data), priority or 0, name, unique, slot,
             limit))

    def _wake(self, curs):
        """Tell waiting consumers a message was written (PostgreSQL's NOTIFY)."""

    def enqueue_unique(self, data, priority, key, task_id):
        """Write ``data`` unless another task holds ``key``; returns the id
        of the task holding it, or None once written.

        One transaction takes the key (its row's primary key decides a race)
        and writes the message; the task holding the key already (a retry,
        a delayed task now due) writes it again.
        """
        for _ in range(3):  # the holder's row deleted between two statements
            with self.db(commit=True) as raw:
                curs = QueueCursor(self, raw)
                curs.execute(
                    "insert into hueyscope_unique (queue, key, task_id, since) "
                    "values (?, ?, ?, ?) on conflict do nothing",
                    (self.name, key, task_id, time.time()))
                if raw.rowcount != 1:
                    row = curs.execute(
                        "select task_id from hueyscope_unique where queue = ? "
                        "and key = ?", (self.name, key)).fetchone()
                    if row is None:
                        continue
                    if row[0] != task_id:
                        return row[0]
                self._insert_message(raw, data, priority, key)
                self._wake(raw)
                return None
        raise RuntimeError("unique key %s: its holder changed three times "
                           "in a row" % key)

    def _took_unique(self, lease, key):
        """Lease ``lease`` was taken with unique ``key`` (None: not unique)."""
        if key is not None:
            self._unique_leases[lease] = key

    def _unique_outcome(self, held, final):
        """The task of ``held`` reached an outcome: its key is dropped with
        the lease if ``final``; a retry or a delay keeps it."""
        if not self._unique_leases:
            return
        key = self._unique_leases.pop(held.lease, None)
        if key is not None and final and held.task is not None:
            self._unique_drop[held.lease] = (key, held.task[0])

    def _drop_unique(self, curs, ids):
        """Delete the unique keys of the leases ``ids`` released for good."""
        rows = [(self.name,) + self._unique_drop.pop(lease)
                for lease in ids if lease in self._unique_drop]
        if rows:
            QueueCursor(self, curs).executemany(
                "delete from hueyscope_unique where queue = ? and key = ? "
                "and task_id = ?", rows)
