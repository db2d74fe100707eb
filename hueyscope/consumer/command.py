"""``hueyscope consume``: run the huey consumer on the configured queue.

Any user's Huey instance works (``--app myapp.tasks:huey``); the recorder is
attached to it, so every signal lands in the event store. SIGINT and SIGTERM
stop it gracefully: tasks in flight finish, everything is flushed, exit 0. A
second signal interrupts the tasks still running (exit 1).
"""
import dataclasses
import logging
import os
import signal
import sys
import threading

import click
from click.core import ParameterSource
from huey.constants import WORKER_PROCESS, WORKER_THREAD
from huey.exceptions import ConfigurationError

import hueyscope
from hueyscope.alerts.command import rules_from
from hueyscope.apps import check_has_tasks, open_app
from hueyscope.consumer.chores import Chore, failure_line, in_child
from hueyscope.consumer.retention import RetentionLoop
from hueyscope.consumer.runner import Consumer
from hueyscope.events.recorder import recorder_for
from hueyscope.options import (LEASE_SETTINGS, QUEUE_SETTINGS, BadInput, Choice,
                               FloatRange, IntRange, capture_options,
                               settings_options)

logger = logging.getLogger("hueyscope.consumer")

LOG_FORMAT = "[%(asctime)s] %(levelname)s %(processName)s %(threadName)s: %(message)s"


REBUILD = ("import json, sys\n"
           "from hueyscope.reports.builder import build_report\n"
           "build_report([sys.argv[1]], sys.argv[2])\n"
           "print(json.dumps(True))\n")


class ReportLoop:
    """Rebuild the static report every ``every`` seconds, in a thread (a
    :class:`~hueyscope.consumer.chores.Chore`), each build in a child process.

    A failed build is logged and retried at the next interval: the report is
    a view of the event store and must never take the consumer down.
    """

    def __init__(self, events, site, every):
        self.events = events
        self.site = site
        self.every = every
        self.builds = 0
        self._chore = Chore("report", every, self.build)

    def start(self):
        self._chore.start()

    def stop(self, final_build=True, timeout=60.0):
        self._chore.stop(timeout)
        if final_build:
            self.build()

    def build(self):
        try:
            in_child(REBUILD, self.events, self.site)
        except Exception as exc:
            logger.warning("Report not rebuilt: %s", failure_line(exc))
            return False
        self.builds += 1
        logger.info("Report rebuilt in %s", self.site)
        return True


def _alert_loop(settings, rules, every, consumer):
    """Checks of ``rules`` every ``every`` seconds, recorded under this run."""
    from hueyscope.alerts.loop import AlertLoop

    queue = settings.queue_path if settings.queue_scheme == "sqlite" else None
    return AlertLoop(settings.events, rules, every, app=settings.app,
                     queue=queue, run_id=lambda: consumer.run_id)


class _NotShownYet(logging.Filter):
    """Let through only records no handler below the root has shown.

    The app's own logging (Django's LOGGING, say) may give the ``huey``
    logger a handler; the same line printed again by ours at the root
    would show every line twice. Ours shows what nothing else does.
    """

    def filter(self, record):
        logger = logging.getLogger(record.name)
        while logger.parent is not None:
            if logger.handlers:
                return False
            logger = logger.parent
        return True


class _Redacting(logging.Formatter):
    """The log line, traceback included, redacted as the event store's
    errors are: huey logs a failed task's exception, secrets and all."""

    def __init__(self, fmt, redaction):
        super().__init__(fmt)
        self.redaction = redaction

    def format(self, record):
        return self.redaction.text(super().format(record))


def configure_logging(level, redact=None):
    """Log to stderr at ``level``, redacted (``redact``: the --redact value)."""
    from hueyscope.redaction import Redaction

    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Redacting(LOG_FORMAT, Redaction(redact)))
        handler.addFilter(_NotShownYet())
        root.addHandler(handler)
    root.setLevel(level)


TASK_LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "off"]


@click.command()
@settings_options(only=QUEUE_SETTINGS + ("site",) + LEASE_SETTINGS
                  + ("retention", "rules"))
@capture_options
@click.option("-w", "--workers", type=IntRange(min=1), default=4, show_default=True,
              help="Number of workers.")
@click.option("-k", "--worker-type", type=Choice([WORKER_THREAD, WORKER_PROCESS]),
              default=WORKER_THREAD, show_default=True,
              help="Run tasks in threads or in forked processes.")
@click.option("--periodic/--no-periodic", default=True, show_default=True,
              help="Enqueue periodic (crontab) tasks.")
@click.option("--initial-delay", type=FloatRange(min=0.001), default=0.1,
              show_default=True, help="Seconds between polls of a busy queue.")
@click.option("--max-delay", type=FloatRange(min=0.001), default=2.0,
              show_default=True, help="Longest poll interval of an idle queue.")
@click.option("--backoff", type=FloatRange(min=1.0), default=1.15,
              show_default=True, help="Poll interval growth on an empty queue.")
@click.option("--scheduler-interval", type=IntRange(min=1, max=60), default=1,
              show_default=True,
              help="Seconds between checks for due scheduled tasks "
                   "(a factor of 60).")
@click.option("--health-check-interval", type=FloatRange(min=0.1), default=10.0,
              show_default=True,
              help="Seconds between checks that restart dead workers.")
@click.option("--health-check/--no-health-check", default=True, show_default=True,
              help="Restart workers that died.")
@click.option("--shutdown-timeout", type=FloatRange(min=0), default=None,
              help="On a graceful stop, interrupt tasks still running after "
                   "this many seconds (default: wait for them).")
@click.option("--report-every", type=FloatRange(min=1), default=None,
              metavar="SECONDS",
              help="Rebuild the static report into --site every SECONDS.")
@click.option("--flush-locks", is_flag=True,
              help="Also free locks with no holder on record before starting "
                   "(taken through huey's own storage). Locks of dead "
                   "consumers are freed anyway on a leased queue, and a live "
                   "holder's lock never is.")
@click.option("--check-every", type=FloatRange(min=1), default=None,
              metavar="SECONDS",
              help="Check the alert rules every SECONDS and record each "
                   "firing alert in the event store's alerts table (see "
                   "hueyscope check).")
@click.option("--heartbeat-every", type=FloatRange(min=0.1), default=2.0,
              show_default=True,
              help="Seconds between heartbeats and queue samples in the event store.")
@click.option("--default-timeout", type=FloatRange(min=0.001), default=None,
              metavar="SECONDS",
              help="Stop a task without a timeout= of its own after SECONDS "
                   "(recorded timeout; retries apply). Enforced in thread "
                   "and process workers alike.")
@click.option("--task-logs", type=Choice(TASK_LOG_LEVELS, case_sensitive=False),
              default="INFO", show_default=True,
              help="Keep the log records a running task emits at this level "
                   "or above in the event store (task_logs, at most 200 a "
                   "run), or none (off).")
@click.option("-q", "--quiet", is_flag=True, help="Log warnings and errors only.")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages too.")
def consume(settings, workers, worker_type, periodic, initial_delay,
            max_delay, backoff, scheduler_interval, health_check_interval,
            health_check, shutdown_timeout, report_every, flush_locks,
            check_every, heartbeat_every, default_timeout, task_logs, quiet,
            verbose):
    """Run the consumer: execute the tasks of the configured queue.

    \b
    Examples:
        hueyscope consume --workers 4
        hueyscope consume --app myapp.tasks:huey --worker-type process
        hueyscope consume --app djsite.settings:HUEY
        hueyscope consume --report-every 60 --site /var/www/tasks
        hueyscope consume --retention 30d --no-args
        hueyscope consume --retention none
        hueyscope consume --check-every 60 --rules rules.toml

    An --app in a Django settings module sets Django up and imports the
    tasks.py of each installed app, as manage.py run_huey does. An app with
    no task at all is refused.

    SIGINT (Ctrl-C) and SIGTERM stop it gracefully: tasks in flight finish,
    then it exits 0. A second signal interrupts them; interrupted tasks go
    back on the queue.

    On a SQLite queue delivery is at-least-once by default: tasks of a
    consumer that died (SIGKILL, OOM, power loss) go back on the queue at
    the next consumer's start and at every health check, and their locks
    are freed. Tasks must be idempotent.
    """
    # A stop signal while the app loads is a stop request like any other:
    # kept until the consumer exists, then handed to it (see _EarlyStop).
    early = _EarlyStop()
    configure_logging(logging.WARNING if quiet else
                      logging.DEBUG if verbose else logging.INFO,
                      redact=settings.redact)
    if 60 % scheduler_interval:
        raise BadInput("--scheduler-interval must be a factor of 60, not %d"
                       % scheduler_interval)
    rules = rules_from(settings.rules)
    events_given = click.get_current_context().get_parameter_source(
        "events") in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    chosen = {}

    def check(huey):
        check_has_tasks(huey, settings.app)
        chosen["events"] = _event_store(huey, settings, events_given)

    huey = open_app(settings, check=check)
    settings = dataclasses.replace(settings, events=chosen["events"])
    recorder = hueyscope.attach(huey, events=settings.events)
    try:
        consumer = Consumer(
            huey, recorder=recorder, app=settings.app,
            sample_interval=heartbeat_every, workers=workers,
            worker_type=worker_type, periodic=periodic,
            initial_delay=initial_delay, max_delay=max_delay, backoff=backoff,
            scheduler_interval=scheduler_interval,
            check_worker_health=health_check,
            health_check_interval=health_check_interval,
            shutdown_timeout=shutdown_timeout, flush_locks=flush_locks,
            lease_timeout=settings.lease_timeout,
            max_recoveries=settings.max_recoveries,
            keep_failed=settings.keep_failed, default_timeout=default_timeout,
            task_log_level=None if task_logs.lower() == "off"
            else logging.getLevelName(task_logs.upper()))
    except ConfigurationError as exc:
        raise BadInput(str(exc))
    early.hand_to(consumer)
    if huey.immediate:
        raise BadInput("%s has immediate mode on; a consumer cannot run it"
                       % settings.app)

    chores = _chores(settings, report_every, rules, check_every, consumer)
    for chore in chores:
        chore.start()
    logger.info("hueyscope consumer: %d %s worker(s) on %s, events in %s, "
                "pid %d. Ctrl-C or SIGTERM stops gracefully.", workers,
                worker_type, getattr(huey.storage, "filename", settings.queue),
                settings.events,
                os.getpid())
    try:
        reason = consumer.run()
    finally:
        for chore in reversed(chores):
            chore.stop()
    if reason == "restart":
        _restart()
    sys.exit(0 if reason == "graceful" else 1)


def _chores(settings, report_every, rules, check_every, consumer):
    """What the consumer does on timers besides its tasks, not started yet:
    the report (``--report-every``), retention, alert checks (``--check-every``)."""
    chores = []
    if report_every:
        chores.append(ReportLoop(settings.events, settings.site, report_every))
    if settings.retention is not None:
        chores.append(RetentionLoop(settings.events, settings.retention))
    else:
        logger.info("Retention: none; the event store at %s keeps every "
                    "event and grows by about 1.2 kB per task.",
                    settings.events)
    if check_every:
        chores.append(_alert_loop(settings, rules, check_every, consumer))
    return chores


def _restart():
    """Start this command again in this process, as huey_consumer does on SIGHUP.

    Run as ``python -m hueyscope``, so it works however it was started;
    the run just ended was closed with the stop reason ``restart``.
    """
    logger.info("Consumer will restart.")
    logging.shutdown()
    args = [sys.executable, "-m", "hueyscope"] + sys.argv[1:]
    os.execv(sys.executable, args)


def _event_store(huey, settings, given):
    """The event store this consumer records to.

    An app that attaches the recorder itself with an ``events=`` path of
    its own (``hueyscope.attach(huey, events=...)``, in Django's
    ``AppConfig.ready``) records there. Without --events (or
    HUEYSCOPE_EVENTS) the consumer follows it; with one that names another
    file, the record would be split between two stores, the app's
    producers writing one and this consumer the other: refused.
    """
    recorder = recorder_for(huey)
    if recorder is None or os.path.realpath(recorder.path) == \
            os.path.realpath(settings.events):
        return settings.events
    if not given:
        return recorder.path
    raise ValueError(
        "%s records to %s (its own hueyscope.attach(events=...)), not to "
        "%s; drop --events, or attach without events= so that the app "
        "follows it" % (settings.app, recorder.path, settings.events))


class _EarlyStop:
    """SIGINT/SIGTERM handlers for the time before the consumer runs.

    Loading an app, opening the queue and starting the writer take a
    moment; a stop signal then would kill the process with the default
    handler (exit -15). This keeps the signal, and once the consumer
    exists passes it on, so it starts and stops at once, gracefully. The
    consumer installs its own handlers when it runs, and puts these back
    when it stops.
    """

    def __init__(self):
        self.consumer = None
        self.signum = None
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, self._handle)

    def _handle(self, signum, frame):
        if self.consumer is None:
            self.signum = signum
        else:
            self.consumer._handle_signal(signum, frame)

    def hand_to(self, consumer):
        self.consumer = consumer
        if self.signum is not None:
            consumer._handle_signal(self.signum, None)
