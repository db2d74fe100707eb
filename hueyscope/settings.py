"""The one place configuration enters hueyscope.

A :class:`Settings` value is built from command-line flags, falling back to
``HUEYSCOPE_*`` environment variables, falling back to the defaults here.
Every ``HUEYSCOPE_*`` variable is a field of it (see :data:`ENV`), and its
option is declared once, in :mod:`hueyscope.options`. Commands export it
back to the environment before they import a user's app, so an app that
builds its Huey instance at import time (the huey way:
``hueyscope.demo_tasks:huey``) sees the same queue and event store as the
command, and so do child processes.

Bad values raise ValueError with a one-line message; the command line
prints it as one ``Error:`` line, exit code 2 (see :mod:`hueyscope.cli`).
"""
import dataclasses
import os
import re
from typing import Optional
from urllib.parse import urlparse

from hueyscope.redaction import Redaction, keys_of
from hueyscope.signals import STALE_SECONDS

DEFAULT_QUEUE = "queue.db"
DEFAULT_EVENTS = "events.db"
DEFAULT_SITE = "site"
DEFAULT_APP = "hueyscope.demo_tasks:huey"
DURABILITY = ("full", "normal")
DELIVERY = ("at-least-once", "at-most-once")
# Key names added to the redaction's own (hueyscope.redaction.DEFAULT_KEYS)
# by default: none. ``--redact pin,-session`` adds one and drops one.
DEFAULT_REDACT = ""
# How long a consumer keeps events and finished tasks in the event store
# (``consume --retention``). Without a bound the store grows by about
# 1.2 kB per task for ever, usually on the disk that holds the queue, and a
# full disk stops the queue too. Two weeks keeps the detail of the last two
# runs of a weekly job and of an incident noticed after a long weekend;
# older history survives as hourly roll-ups. See docs/retention.md.
DEFAULT_RETENTION = "14d"
# The --retention value that keeps everything.
NO_RETENTION = "none"
# Seconds without a heartbeat after which a holder on another host counts
# as dead: a dead run, wherever the two databases say so.
DEFAULT_LEASE_TIMEOUT = STALE_SECONDS
# Recoveries of one task before it is parked in the failed set as lost.
DEFAULT_MAX_RECOVERIES = 3
# Seconds the failed set keeps an entry (``--keep-failed``).
DEFAULT_KEEP_FAILED = 30 * 86400

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)


def parse_duration(text):
    """Seconds in a duration like ``90s``, ``15m``, ``12h``, ``30d``, ``2w``.

    Raises ValueError (one line) for anything else, and for zero.
    """
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(
            "%r is not a duration: use a number and a unit, one of s, m, h, "
            "d, w (e.g. 90s, 15m, 12h, 30d, 2w)" % text)
    seconds = float(match.group(1)) * UNITS[match.group(2).lower()]
    if seconds <= 0:
        raise ValueError("duration must be more than zero, not %r" % text)
    return seconds


def parse_retention(text):
    """Seconds of a retention period such as ``14d``; None for ``none``.

    ``none`` (any case) keeps everything. Raises ValueError (one line) for
    anything else that is not a duration of more than zero.
    """
    if str(text).strip().lower() == NO_RETENTION:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ValueError("%s; or %s to keep everything" % (exc, NO_RETENTION)) \
            from None


def _number(kind, what):
    def parse(text):
        try:
            return kind(str(text).strip())
        except ValueError:
            raise ValueError("%s must be %s, not %r" % (
                what[0], what[1], text)) from None
    return parse


def _setting(default, parse=None, show=None):
    """A Settings field: ``parse`` turns its variable's text into the value
    (default: by the field's type); ``show`` writes the value back as text
    for :meth:`Settings.export_env` (default: str)."""
    return dataclasses.field(default=default,
                             metadata={"parse": parse, "show": show})


def _show_seconds(value):
    return ("%f" % value).rstrip("0").rstrip(".") + "s"  # never 2.592e+06s


def _show_retention(value):
    return NO_RETENTION if value is None else _show_seconds(value)


ENV = {
    "queue": "HUEYSCOPE_QUEUE",
    "events": "HUEYSCOPE_EVENTS",
    "site": "HUEYSCOPE_SITE",
    "durability": "HUEYSCOPE_DURABILITY",
    "app": "HUEYSCOPE_APP",
    "no_args": "HUEYSCOPE_NO_ARGS",
    "max_arg_chars": "HUEYSCOPE_MAX_ARG_CHARS",
    "redact": "HUEYSCOPE_REDACT",
    "delivery": "HUEYSCOPE_DELIVERY",
    "lease_timeout": "HUEYSCOPE_LEASE_TIMEOUT",
    "max_recoveries": "HUEYSCOPE_MAX_RECOVERIES",
    "keep_failed": "HUEYSCOPE_KEEP_FAILED",
    "retention": "HUEYSCOPE_RETENTION",
    "rules": "HUEYSCOPE_RULES",
    "datasette_url": "HUEYSCOPE_DATASETTE_URL",
}
TRUE = ("1", "true", "yes", "on")


@dataclasses.dataclass(frozen=True)
class Settings:
    queue: str = DEFAULT_QUEUE
    events: str = DEFAULT_EVENTS
    site: str = DEFAULT_SITE
    durability: str = "full"
    app: str = DEFAULT_APP
    no_args: bool = False  # record no task arguments at all
    max_arg_chars: int = 2000  # longest args/kwargs JSON kept (0: no limit)
    redact: str = DEFAULT_REDACT  # key names added to the defaults, -name drops
    delivery: str = "at-least-once"  # SQLite queues: leased, or huey's delete
    # Recovery of leased queues (consume, recover, status).
    lease_timeout: float = _setting(DEFAULT_LEASE_TIMEOUT, _number(
        float, ("lease-timeout", "a number of seconds")))
    max_recoveries: int = _setting(DEFAULT_MAX_RECOVERIES)
    keep_failed: float = _setting(DEFAULT_KEEP_FAILED, parse_duration,
                                  _show_seconds)
    # Seconds of history a consumer keeps in the event store; None: all.
    retention: Optional[float] = _setting(
        parse_duration(DEFAULT_RETENTION), parse_retention, _show_retention)
    rules: str = ""  # a rules.toml over the default alert rules ("": none)
    datasette_url: str = ""  # a Datasette the report links to ("": none)

    @classmethod
    def build(cls, only=None, **flags):
        """Flags win over environment variables, which win over defaults.

        ``only`` names the settings a command uses: the others keep their
        defaults and their variables are not read (default: all of them).
        Raises ValueError with a one-line message for bad values.
        """
        values = {}
        for field in dataclasses.fields(cls):
            if only is not None and field.name not in only:
                continue
            value = flags.get(field.name)
            if value is None:
                value = os.environ.get(ENV[field.name])
                # An empty variable counts as unset, except for the redaction
                # list, where it is how "add no key" reaches a child (whose
                # --redact '' then beats a parent's variable).
                if value == "" and field.name != "redact":
                    value = None
            if value is None:
                continue
            values[field.name] = _parsed(field, value)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self):
        if self.durability not in DURABILITY:
            raise ValueError(
                "durability must be 'full' or 'normal', not %r" % self.durability)
        if self.delivery not in DELIVERY:
            raise ValueError("delivery must be 'at-least-once' or "
                             "'at-most-once', not %r" % self.delivery)
        scheme = self.queue_scheme
        if scheme not in ("sqlite", "redis", "postgresql", "postgres"):
            raise ValueError(
                "unsupported queue URL %r: use a SQLite file path, "
                "postgresql:// or redis://" % self.queue)
        if self.max_arg_chars < 0:
            raise ValueError("max-arg-chars must be 0 (no limit) or more, "
                             "not %d" % self.max_arg_chars)
        if self.lease_timeout < 1:
            raise ValueError("lease-timeout must be 1 second or more, not %g"
                             % self.lease_timeout)
        if self.max_recoveries < 0:
            raise ValueError("max-recoveries must be 0 or more, not %d"
                             % self.max_recoveries)
        if self.datasette_url and not re.match(r"^https?://[^/]", self.datasette_url):
            raise ValueError("datasette-url must be an http:// or https:// "
                             "URL, not %r" % self.datasette_url)
        if ":" not in self.app:
            raise ValueError(
                "--app must look like module:attribute or "
                "path/to/file.py:attribute, not %r" % self.app)

    @property
    def redact_keys(self):
        """The key names redacted: the defaults with ``redact`` applied,
        normalised (see :func:`hueyscope.redaction.keys_of`)."""
        return keys_of(self.redact)

    @property
    def queue_scheme(self):
        """'sqlite' for a file path (or sqlite:///path), else the URL scheme."""
        if "://" not in self.queue:
            return "sqlite"
        return urlparse(self.queue).scheme

    @property
    def queue_path(self):
        """The SQLite file of the queue (only for the sqlite scheme)."""
        if self.queue.startswith("sqlite:///"):
            return self.queue[len("sqlite:///"):]
        return self.queue

    def export_env(self):
        """Write these settings to os.environ for imported apps and children."""
        for field in dataclasses.fields(self):
            os.environ[ENV[field.name]] = _shown(field, getattr(self, field.name))


def _parsed(field, value):
    """A field's value from a flag (already typed by click) or a variable."""
    if not isinstance(value, str):
        return value
    parse = field.metadata.get("parse")
    if parse is not None:
        return parse(value)
    if field.type is bool:
        return value.strip().lower() in TRUE
    if field.type is int:
        return _number(int, (field.name.replace("_", "-"), "a whole number"))(value)
    return value


def _shown(field, value):
    show = field.metadata.get("show")
    if show is not None:
        return show(value)
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def configured_redaction():
    """The :class:`~hueyscope.redaction.Redaction` the environment asks for
    (HUEYSCOPE_REDACT, as a command exports ``--redact``): for text shown
    again, and for a failed set written by a queue with no recorder."""
    try:
        return Redaction(Settings.build(only=("redact",)).redact)
    except ValueError:
        return Redaction()
