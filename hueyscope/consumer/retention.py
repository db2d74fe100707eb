"""Automatic retention: a consumer that prunes its own event store.

``hueyscope consume --retention 30d`` runs :class:`RetentionLoop`, a chore
(:mod:`hueyscope.consumer.chores`) that deletes what is older than 30 days (14 days when the option is
not given; ``--retention none`` runs no loop) -- once when the consumer
starts, then every tenth of the retention period, but no more often than
once a minute and no less often than once an hour. It is
:func:`hueyscope.events.retention.prune_store` on a timer: events, finished
tasks and queue samples go, roll-ups and runs stay, rows go in small
transactions so the recorder's writer is never held up for long.

It never vacuums (VACUUM needs the store to itself; run ``hueyscope prune
--vacuum`` for that) and never takes the consumer down: a failed prune is
logged and tried again at the next interval.

Each prune runs in a short-lived child process, as every chore does (see
:mod:`hueyscope.consumer.chores`); the consumer itself never maps the store
either (a fault of SQLite's memory map would kill it, see
hueyscope.events.writer_process).
"""
import logging
import os
import time

from hueyscope.consumer.chores import Chore, failure_line, in_child

logger = logging.getLogger("hueyscope.consumer")

MIN_INTERVAL = 60.0
MAX_INTERVAL = 3600.0


def prune_interval(retention):
    """Seconds between prunes for a retention period of ``retention`` seconds."""
    return min(MAX_INTERVAL, max(MIN_INTERVAL, retention / 10.0))


PRUNE = ("import json, sys\n"
         "from hueyscope.events.retention import prune_store\n"
         "print(json.dumps(prune_store(sys.argv[1], float(sys.argv[2]))))\n")


def prune_in_child(events, retention, timeout=3600):
    """:func:`hueyscope.events.retention.prune_store` in a child process
    (see :mod:`hueyscope.consumer.chores`); its outcome dict. Raises
    :class:`~hueyscope.consumer.chores.ChildFailed` with the child's last line."""
    return in_child(PRUNE, events, repr(retention), timeout=timeout)


class RetentionLoop:
    """Prune the event store at ``events`` of what is older than ``retention``
    seconds: at :meth:`start`, then every :func:`prune_interval`, in a thread.

    ``runs`` counts the prunes that succeeded, ``failures`` those that raised;
    ``last`` is the outcome dict of the latest successful one.
    """

    def __init__(self, events, retention, interval=None):
        self.events = events
        self.retention = float(retention)
        self.interval = prune_interval(self.retention) if interval is None \
            else float(interval)
        self.runs = 0
        self.failures = 0
        self.last = None
        self._chore = Chore("retention", self.interval, self.prune, first_at=0)

    def start(self):
        self._chore.start()

    def stop(self, timeout=10.0):
        """Ask the thread to stop and wait for it (a prune under way
        finishes its current chunk first). True if it stopped."""
        return self._chore.stop(timeout)

    def prune(self):
        """Prune once; log the outcome. Never raises."""
        if not os.path.exists(self.events):
            # The recorder creates the store with its first write.
            logger.debug("Retention: no event store at %s yet.", self.events)
            return None
        try:
            outcome = prune_in_child(self.events, self.retention)
        except Exception as exc:
            self.failures += 1
            logger.warning("Retention: prune of %s failed, retrying in %ds: "
                           "%s", self.events, self.interval, failure_line(exc))
            return None
        self.runs += 1
        self.last = outcome
        logger.info("Retention: deleted %d events, %d tasks, %d queue samples "
                    "older than %s from %s; roll-ups kept; next in %ds",
                    outcome["events"], outcome["tasks"], outcome["queue_samples"],
                    time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                  time.gmtime(outcome["cutoff"])),
                    self.events, self.interval)
        return outcome
