"""Alert checks inside a consumer: ``hueyscope consume --check-every 60``.

:class:`AlertLoop` is a chore (:mod:`hueyscope.consumer.chores`), a daemon
thread that evaluates the rules every so many
seconds and records each firing alert in the ``alerts`` table of the event
store, under the consumer's run. It never raises into the consumer: a check
that fails is logged and tried again at the next interval.
"""
import logging
import time

from hueyscope.alerts.checks import Sources, evaluate, firing
from hueyscope.consumer.chores import Chore

logger = logging.getLogger("hueyscope.alerts")


def record(events, alerts, run_id=None, now=None):
    """Insert ``alerts`` into the ``alerts`` table of the store at ``events``."""
    from hueyscope.events.schema import open_event_store

    if not alerts:
        return 0
    now = time.time() if now is None else now
    db = open_event_store(events, create=False)
    try:
        with db.conn:
            db["alerts"].insert_all(
                {"ts": now, "rule": a.rule, "message": a.message,
                 "value": a.value, "threshold": a.threshold, "run_id": run_id}
                for a in alerts)
    finally:
        db.close()
    return len(alerts)


class AlertLoop:
    """Check ``rules`` every ``every`` seconds and record what fires.

    ``huey`` is the consumer's own Huey (the periodic check reads its
    crontabs); ``run_id`` a callable returning the consumer's run id, known
    only once it runs. ``checks`` counts the checks that ran, ``failures``
    those that raised, ``recorded`` the alerts written.
    """

    def __init__(self, events, rules, every, huey=None, queue=None, run_id=None):
        self.events = events
        self.rules = rules
        self.every = float(every)
        self.huey = huey
        self.queue = queue
        self.run_id = run_id or (lambda: None)
        self.checks = self.failures = self.recorded = 0
        self._chore = Chore("alerts", self.every, self.check)

    def start(self):
        self._chore.start()

    def stop(self, timeout=10.0):
        """Stop the thread (a check under way finishes); True if it stopped."""
        return self._chore.stop(timeout)

    def check(self):
        """Evaluate once, record and log what fires; never raises."""
        sources = Sources(self.events, queue=self.queue,
                          app=lambda: self.huey)
        try:
            alerts = firing(evaluate(self.rules, sources))
            self.recorded += record(self.events, alerts, self.run_id(), sources.now)
        except Exception as exc:
            self.failures += 1
            logger.warning("Alert check failed, retrying in %ss: %s: %s",
                           self.every, type(exc).__name__, exc)
            return None
        self.checks += 1
        for alert in alerts:
            logger.warning("Alert %s", alert.message)
        return alerts
