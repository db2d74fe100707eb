"""Alert checks inside a consumer: ``hueyscope consume --check-every 60``.

:class:`AlertLoop` is a chore (:mod:`hueyscope.consumer.chores`), a daemon
thread that evaluates the rules every so many
seconds, each time in a child process, and records each firing alert in
the ``alerts`` table of the event store, under the consumer's run. It never
raises into the consumer: a check that fails is logged and tried again at
the next interval.
"""
import dataclasses
import json
import logging
import time

from hueyscope.alerts.checks import Sources, evaluate, firing
from hueyscope.alerts.command import lazy_app
from hueyscope.consumer.chores import Chore, failure_line, in_child

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


CHECK = ("import json, sys\n"
         "from hueyscope.alerts.loop import check_and_record\n"
         "print(json.dumps(check_and_record(*sys.argv[1:])))\n")


def check_and_record(events, rules, queue="", app="", run_id=""):
    """Evaluate ``rules`` (JSON, as :func:`hueyscope.alerts.rules.load_rules`
    returns them) and record what fires under ``run_id``; the alerts as dicts.

    What :class:`AlertLoop` runs in its child process: the arguments are
    strings, "" for none. ``app`` (``module:huey``) is imported only if the
    periodic check needs its crontabs.
    """
    sources = Sources(events, queue=queue or None,
                      app=lazy_app(app) if app else None, consumer=run_id or None)
    alerts = firing(evaluate(json.loads(rules), sources))
    record(events, alerts, run_id or None, sources.now)
    return [dataclasses.asdict(alert) for alert in alerts]


class AlertLoop:
    """Check ``rules`` every ``every`` seconds and record what fires.

    Each check runs in a child process (see :mod:`hueyscope.consumer.chores`).
    ``app`` is the consumer's app (``module:huey``), whose crontabs the
    periodic check reads; ``run_id`` a callable returning the consumer's run
    id, known only once it runs. ``checks`` counts the checks that ran,
    ``failures`` those that failed, ``recorded`` the alerts written.
    """

    def __init__(self, events, rules, every, app=None, queue=None, run_id=None):
        self.events = events
        self.rules = rules
        self.every = float(every)
        self.app = app
        self.queue = queue
        self.run_id = run_id or (lambda: None)
        self._in_consumer = run_id is not None
        self.checks = self.failures = self.recorded = 0
        self._chore = Chore("alerts", self.every, self.check)

    def start(self):
        self._chore.start()

    def stop(self, timeout=10.0):
        """Stop the thread (a check under way finishes); True if it stopped."""
        return self._chore.stop(timeout)

    def check(self):
        """Evaluate once, record and log what fires; never raises.

        Inside a consumer (``run_id`` given), the first check waits for the
        consumer's run to begin: what it records belongs to that run.
        """
        run_id = self.run_id()
        if run_id is None and self._in_consumer:
            return None
        try:
            alerts = in_child(CHECK, self.events, json.dumps(self.rules),
                              self.queue or "", self.app or "",
                              run_id or "", timeout=max(60.0, self.every * 10))
        except Exception as exc:
            self.failures += 1
            logger.warning("Alert check failed, retrying in %ss: %s",
                           self.every, failure_line(exc))
            return None
        self.checks += 1
        self.recorded += len(alerts)
        for alert in alerts:
            logger.warning("Alert %s", alert["message"])
        return alerts
