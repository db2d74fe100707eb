"""The one place configuration enters hueyscope.

A :class:`Settings` value is built from command-line flags, falling back to
``HUEYSCOPE_*`` environment variables, falling back to defaults in the
current folder. Commands export it back to the environment before they import
a user's app, so an app that builds its Huey instance at import time (the
huey way: ``hueyscope.demo_tasks:huey``) sees the same queue and event store
as the command, and so do child processes.
"""
import dataclasses
import os
from urllib.parse import urlparse

from hueyscope.redaction import Redaction, keys_of

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
            if field.type is bool:
                value = value if isinstance(value, bool) else (
                    str(value).strip().lower() in TRUE)
            elif field.type is int:
                try:
                    value = int(str(value).strip())
                except ValueError:
                    raise ValueError("%s must be a whole number, not %r" % (
                        field.name.replace("_", "-"), value)) from None
            else:
                value = str(value)
            values[field.name] = value
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
        for name, var in ENV.items():
            value = getattr(self, name)
            os.environ[var] = ("1" if value else "0") if isinstance(value, bool) \
                else str(value)


def configured_redaction():
    """The :class:`~hueyscope.redaction.Redaction` the environment asks for
    (HUEYSCOPE_REDACT, as a command exports ``--redact``): for text shown
    again, and for a failed set written by a queue with no recorder."""
    try:
        return Redaction(Settings.build(only=("redact",)).redact)
    except ValueError:
        return Redaction()
