"""Shared click option decorators and the one error type every command raises.

Configuration enters through these options (and their HUEYSCOPE_* environment
variables) and nowhere else: each command turns them into one
:class:`hueyscope.settings.Settings` value.
"""
import functools

import click

from hueyscope.settings import (DEFAULT_KEEP_FAILED, DEFAULT_LEASE_TIMEOUT,
                                DEFAULT_MAX_RECOVERIES, DEFAULT_RETENTION, DELIVERY, DURABILITY, ENV, Settings,
                                parse_duration, parse_retention)


class BadInput(click.ClickException):
    """Bad input from the user: printed as one ``Error: ...`` line, exit 2."""

    exit_code = 2


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


class Duration(_OneLineParamType, click.ParamType):
    """A duration such as ``30d``: its value in seconds."""

    name = "duration"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Retention(Duration):
    """A retention period: seconds, or ``none`` to keep everything.

    ``none`` is passed on as the text itself: None is how an option says it
    was not given (and the setting's default applies).
    """

    name = "retention"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, (int, float)):
            return value
        try:
            seconds = parse_retention(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return value.strip().lower() if seconds is None else seconds


def _setting_option(name, *decls, **attrs):
    """The option of Settings field ``name``, reading its HUEYSCOPE_* variable.

    Without the flag it passes None, and :meth:`Settings.build` applies the
    field's default: there is one default, the field's.
    """
    def decorate(fn):
        return click.option(*decls, name, envvar=ENV[name], default=None,
                            show_envvar=True, **attrs)(fn)
    return decorate


queue_option = _setting_option(
    "queue", "--queue",
    help="Queue: a SQLite file path (default ./queue.db), a postgresql:// or a redis:// URL.")

events_option = _setting_option(
    "events", "--events",
    help="Event store: SQLite file the recorder writes (default ./events.db).")

site_option = _setting_option(
    "site", "--site", "--out",
    help="Folder the HTML report is written to (default ./site).")

durability_option = _setting_option(
    "durability", "--durability", type=Choice(list(DURABILITY)),
    help="SQLite synchronous mode of the queue: full (default) survives "
         "power loss; normal is faster and may lose the last commits on "
         "power loss, never corrupts.")

delivery_option = _setting_option(
    "delivery", "--delivery", type=Choice(list(DELIVERY)),
    help="SQLite queues: at-least-once (default) leases each task until "
         "its outcome is stored, so a killed consumer's tasks run again; "
         "at-most-once is huey's own dequeue, which deletes.")

app_option = _setting_option(
    "app", "--app",
    help="Huey instance to use, as module:attribute or "
         "path/to/file.py:attribute (default: the demo catalogue, "
         "hueyscope.demo_tasks:huey).")

lease_timeout_option = _setting_option(
    "lease_timeout", "--lease-timeout", type=FloatRange(min=1.0), metavar="SECONDS",
    help="Seconds without a heartbeat after which a holder on another host "
         "(or container) counts as dead; on this host a dead pid is seen at "
         "once (default %g)." % DEFAULT_LEASE_TIMEOUT)

max_recoveries_option = _setting_option(
    "max_recoveries", "--max-recoveries", type=IntRange(min=0), metavar="N",
    help="Park a task in the failed set (recorded as lost) once it was "
         "recovered more than this many times (default %d)."
         % DEFAULT_MAX_RECOVERIES)

keep_failed_option = _setting_option(
    "keep_failed", "--keep-failed", type=Duration(), metavar="DURATION",
    help="How long the failed set keeps a task (hueyscope failed); older "
         "entries are deleted at each recovery, e.g. 7d, 12h (default %dd)."
         % (DEFAULT_KEEP_FAILED // 86400))

retention_option = _setting_option(
    "retention", "--retention", type=Retention(), metavar="DURATION|none",
    help="Prune the event store of events and finished tasks older than "
         "this (90s, 15m, 12h, 30d, 2w): at start, then every tenth of it "
         "(1 min to 1 h). Hourly roll-ups and runs are kept; never vacuums. "
         "'none' keeps everything, and the store grows by about 1.2 kB per "
         "task [default: %s]." % DEFAULT_RETENTION)

rules_option = _setting_option(
    "rules", "--rules", type=Path(exists=True, dir_okay=False), metavar="PATH",
    help="TOML file overriding the default alert rules' thresholds and "
         "windows, or disabling rules (default: every rule at its "
         "defaults).")

datasette_url_option = _setting_option(
    "datasette_url", "--datasette-url", type=HttpURL(), metavar="URL",
    help="Base URL of a Datasette serving the event stores (e.g. "
         "http://localhost:8001): numbers also link to its rows and queries.")


def allow_host_option(fn):
    return click.option(
        "--allow-host", "allow_hosts", metavar="NAME", multiple=True,
        help="Also answer requests for this host name (repeatable), e.g. "
             "the name a reverse proxy or other machines use; * answers any. "
             "By default only the address listened on is answered (and "
             "localhost for a loopback or wildcard address), so a web page "
             "cannot reach the server by pointing its own name at it.",
    )(fn)


def token_env_option(fn):
    return click.option(
        "--token-env", "token_envs", metavar="VAR", multiple=True,
        help="Accept the API token held in environment variable VAR, sent "
             "as 'Authorization: Bearer TOKEN' (repeatable; at least 20 "
             "characters): make one with python -c 'import secrets; "
             "print(secrets.token_urlsafe())'.",
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


# Every setting's option, by field name.
SETTINGS_OPTIONS = {
    "queue": queue_option,
    "events": events_option,
    "durability": durability_option,
    "delivery": delivery_option,
    "app": app_option,
    "site": site_option,
    "lease_timeout": lease_timeout_option,
    "max_recoveries": max_recoveries_option,
    "keep_failed": keep_failed_option,
    "retention": retention_option,
    "rules": rules_option,
    "datasette_url": datasette_url_option,
}
# The settings of a command that opens an app's queue.
QUEUE_SETTINGS = ("queue", "events", "durability", "delivery", "app")
# The recovery settings consume and recover share.
LEASE_SETTINGS = ("lease_timeout", "max_recoveries", "keep_failed")


def settings_options(fn=None, *, only=QUEUE_SETTINGS):
    """Add the options of the settings a command uses; pass ``settings``.

    ``only`` names them (default: --queue, --events, --durability,
    --delivery and --app; any field of :data:`SETTINGS_OPTIONS`). The other settings keep their defaults, and
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
        settings = Settings.build(only=tuple(flags), **flags)
        return fn(*args, settings=settings, **kwargs)

    # click lists options in the reverse order of decoration.
    for name in reversed(names):
        wrapper = SETTINGS_OPTIONS[name](wrapper)
    return wrapper
