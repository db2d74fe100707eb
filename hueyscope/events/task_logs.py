"""The log lines of a task, kept with its record.

:class:`TaskLogHandler` sits on the root logger of a consumer (and of the
worker processes it forks). A record emitted while a task runs -- in the
task's own thread, or anywhere in a worker process running it -- is kept
in the event store's ``task_logs`` table with the task's id, name and
attempt. Bounded: records under ``level`` (default INFO) are not kept, nor
more than ``limit`` (default 200) per run of a task, whose last line then
says how many were left out. huey's and hueyscope's own lines are not
kept: what they say is in the task's events already.

Redacted as arguments are, by the recorder's redaction
(:mod:`hueyscope.redaction`): the values of secret keys of a record's
mapping arguments, and any credential its text shows.
"""
import logging
import threading

from hueyscope import control
from hueyscope.events.recorder import recorder_for
from hueyscope.redaction import MARK

DEFAULT_LIMIT = 200
DEFAULT_LEVEL = logging.INFO
MESSAGE_CHARS = 4000
# Loggers whose lines say what the task's events say already.
OWN_LOGGERS = ("huey", "hueyscope")


class TaskLogHandler(logging.Handler):
    """Keeps the log records of running tasks in the event store."""

    def __init__(self, level=DEFAULT_LEVEL, limit=DEFAULT_LIMIT):
        super().__init__(level)
        self.limit = limit
        self._busy = threading.local()

    def emit(self, record):
        running = control.current() or _only_task_of_process()
        if running is None or getattr(self._busy, "on", False):
            return
        name = record.name
        if name.split(".", 1)[0] in OWN_LOGGERS:
            return
        self._busy.on = True
        try:
            self._keep(running, record)
        except Exception:
            pass  # a log line is never worth a task's failure
        finally:
            self._busy.on = False

    def _keep(self, running, record):
        recorder = recorder_for(running.huey) if running.huey is not None else None
        if recorder is None:
            return
        running.logs += 1
        if running.logs > self.limit:
            return
        text = self._redacted_message(record, recorder.redact)
        if record.exc_info and record.exc_info[0] is not None:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        recorder.task_log(running.task, record.created, record.levelname,
                          record.levelno, record.name, text[:MESSAGE_CHARS],
                          threading.current_thread().name)

    def _redacted_message(self, record, redaction):
        """The record's message as stored: the values of secret keys of its
        dict arguments, and any credential in the text, redacted."""
        args = record.args
        if isinstance(args, dict):
            args = {k: MARK if redaction.secret_key(k) else v
                    for k, v in args.items()}
        try:
            text = str(record.msg) % args if args else str(record.msg)
        except Exception:
            text = record.getMessage()
        return redaction.text(text)

    def finish(self, running):
        """Note how many lines of ``running``'s task were left out, if any."""
        over = running.logs - self.limit
        recorder = recorder_for(running.huey) if running.huey is not None else None
        if over > 0 and recorder is not None:
            import time

            recorder.task_log(
                running.task, time.time(), "WARNING", logging.WARNING,
                "hueyscope", "%d more log record(s) of this run not kept "
                "(at most %d a run)" % (over, self.limit),
                threading.current_thread().name)


def _only_task_of_process():
    # In a worker process, a line from any thread belongs to its one task.
    if not _in_worker_process:
        return None
    ids = control.running_ids()
    return control.running(ids[0]) if len(ids) == 1 else None


_in_worker_process = False


def in_worker_process():
    """Called in a forked worker process: its lines are its task's."""
    global _in_worker_process
    _in_worker_process = True


_installed = []


def install(level=DEFAULT_LEVEL, limit=DEFAULT_LIMIT):
    """Put a :class:`TaskLogHandler` on the root logger; returns it."""
    handler = TaskLogHandler(level, limit)
    logging.getLogger().addHandler(handler)
    _installed.append(handler)
    return handler


def uninstall(handler):
    logging.getLogger().removeHandler(handler)
    if handler in _installed:
        _installed.remove(handler)


def finish(running):
    """The task of ``running`` ended: the note of lines left out, if any."""
    if running.logs:
        for handler in _installed:
            if running.logs > handler.limit:
                handler.finish(running)
