"""Shared click option decorators and the one error type every command raises.

Configuration enters through these options (and their HUEYSCOPE_* environment
variables) and nowhere else: each command turns them into one
:class:`hueyscope.settings.Settings` value.
"""
import functools

import click

from hueyscope.settings import DELIVERY, ENV, Settings


class BadInput(click.ClickException):
    """Bad input from the user: printed as one ``Error: ...`` line, exit 2."""

    exit_code = 2


def queue_option(fn):
    return click.option(
        "--queue", "queue", envvar="HUEYSCOPE_QUEUE", default=None,
        show_envvar=True,
        help="Queue: a SQLite file path (default ./queue.db), a postgresql:// or a redis:// URL.",
    )(fn)


def events_option(fn):
    return click.option(
        "--events", "events", envvar="HUEYSCOPE_EVENTS", default=None,
        show_envvar=True,
        help="Event store: SQLite file the recorder writes (default ./events.db).",
    )(fn)


def site_option(fn):
    return click.option(
        "--site", "--out", "site", envvar="HUEYSCOPE_SITE", default=None,
        show_envvar=True,
        help="Folder the HTML report is written to (default ./site).",
    )(fn)


def durability_option(fn):
    return click.option(
        "--durability", type=Choice(["full", "normal"]),
        envvar="HUEYSCOPE_DURABILITY", default=None, show_envvar=True,
        help="SQLite synchronous mode of the queue: full (default) survives "
             "power loss; normal is faster and may lose the last commits on "
             "power loss, never corrupts.",
    )(fn)


def delivery_option(fn):
    return click.option(
        "--delivery", type=Choice(list(DELIVERY)),
        envvar="HUEYSCOPE_DELIVERY", default=None, show_envvar=True,
        help="SQLite queues: at-least-once (default) leases each task until "
             "its outcome is stored, so a killed consumer's tasks run again; "
             "at-most-once is huey's own dequeue, which deletes.",
    )(fn)


def app_option(fn):
    return click.option(
        "--app", "app", envvar="HUEYSCOPE_APP", default=None, show_envvar=True,
        help="Huey instance to use, as module:attribute or "
             "path/to/file.py:attribute (default: the demo catalogue, "
             "hueyscope.demo_tasks:huey).",
    )(fn)


# What the recorder keeps of task arguments: Settings fields set by
# capture_options.
CAPTURE_FIELDS = ("no_args", "max_arg_chars", "redact")


def capture_options(fn):
    """``--no-args``, ``--max-arg-chars`` and ``--redact``: what is kept of arguments.

    Each passes ``None`` when neither given nor set in the environment, so
    that :meth:`Settings.build` applies its default (and an empty
    HUEYSCOPE_REDACT, which click reads as unset, still adds no key).
    Combined with :func:`settings_options` they go into ``settings``; a
    command without it builds its settings with them.
    """
    fn = click.option(
        "--redact", "redact", default=None, metavar="KEYS",
        envvar=ENV["redact"], show_envvar=True,
        help="Comma-separated key names added to the redacted ones "
             "(password, secret, token, api_key, authorization, cookie, "
             "session, dsn and more: see the Security page); a value under "
             "a key ending with one is stored as ***, in args, kwargs and "
             "text; -NAME drops a default one. Credentials in text (URL "
             "passwords, Bearer tokens) are redacted whatever this says.",
    )(fn)
    fn = click.option(
        "--max-arg-chars", "max_arg_chars", type=IntRange(min=0),
        default=None, metavar="N", envvar=ENV["max_arg_chars"], show_envvar=True,
        help="Keep at most about N characters of each task's args and kwargs "
             "JSON; longer ones are stored as a JSON string ending in "
             "'...[truncated K chars]' (default 2000; 0: no limit).",
    )(fn)
    return click.option(
        "--no-args", "no_args", is_flag=True, flag_value=True, default=None,
        type=Bool(), envvar=ENV["no_args"], show_envvar=True,
        help="Record no task arguments in the event store (args and kwargs "
             "stay empty; the variable takes 1 or 0).",
    )(fn)


SETTINGS_OPTIONS = {
    "queue": queue_option,
    "events": events_option,
    "durability": durability_option,
    "delivery": delivery_option,
    "app": app_option,
}


def settings_options(fn=None, *, only=tuple(SETTINGS_OPTIONS)):
    """Add the options of the settings a command uses; pass ``settings``.

    ``only`` names them (default: --queue, --events, --durability,
    --delivery and --app). The other settings keep their defaults, and
    their environment variables are not read: a command offers, and can
    fail on, only what it uses. A command that also has
    :func:`capture_options` gets their values in ``settings``.
    """
    if fn is None:
        return functools.partial(settings_options, only=only)
    names = tuple(only)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        flags = {name: kwargs.pop(name) for name in names}
        flags.update({name: kwargs.pop(name) for name in CAPTURE_FIELDS
                      if name in kwargs})
        try:
            settings = Settings.build(only=tuple(flags), **flags)
        except ValueError as exc:
            raise BadInput(str(exc))
        return fn(*args, settings=settings, **kwargs)

    # click lists options in the reverse order of decoration.
    for name in reversed(names):
        wrapper = SETTINGS_OPTIONS[name](wrapper)
    return wrapper


class _OneLineParamType:
    """Mixin: a bad value is BadInput (one ``Error:`` line, exit 2), not a
    usage error with the whole usage text around it."""

    def fail(self, message, param=None, ctx=None):
        if param is not None:
            hint = param.get_error_hint(ctx) if ctx is not None else param.name
            message = "Invalid value for %s: %s" % (hint, message)
        raise BadInput(message)


class Bool(_OneLineParamType, click.types.BoolParamType):
    """A boolean (a flag's environment variable) reported on one line."""


class Choice(_OneLineParamType, click.Choice):
    """click.Choice reporting a bad value on one line."""


def _parsed_or_fail(param_type, parse, value, what, param, ctx):
    """Fail with "'abc' is not WHAT" where click would say "not a valid
    integer range", which names a type instead of what to type."""
    if isinstance(value, str):
        try:
            parse(value.strip())
        except ValueError:
            param_type.fail("%r is not %s" % (value, what), param, ctx)


class IntRange(_OneLineParamType, click.IntRange):
    """click.IntRange reporting a bad (or non-numeric) value on one line."""

    def convert(self, value, param, ctx):
        _parsed_or_fail(self, int, value, "a whole number", param, ctx)
        return super().convert(value, param, ctx)


class FloatRange(_OneLineParamType, click.FloatRange):
    """click.FloatRange reporting a bad (or non-numeric) value on one line."""

    def convert(self, value, param, ctx):
        _parsed_or_fail(self, float, value, "a number", param, ctx)
        return super().convert(value, param, ctx)


class Path(_OneLineParamType, click.Path):
    """click.Path reporting a bad path (a file where a folder is needed, a
    missing one that must exist) on one line."""


class HttpURL(_OneLineParamType, click.ParamType):
    """An http:// or https:// URL with a host, checked before any work starts."""

    name = "url"

    def convert(self, value, param, ctx):
        from urllib.parse import urlparse

        parsed = urlparse(str(value))
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            self.fail("must be an http:// or https:// URL, not %r" % value,
                      param, ctx)
        return value
