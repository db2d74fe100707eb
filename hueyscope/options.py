"""Shared click option decorators and the one error type every command raises.

Configuration enters through these options (and their HUEYSCOPE_* environment
variables) and nowhere else: each command turns them into one
:class:`hueyscope.settings.Settings` value.
"""
import functools

import click

from hueyscope.settings import Settings


class BadInput(click.ClickException):
    """Bad input from the user: printed as one ``Error: ...`` line, exit 2."""

    exit_code = 2


def queue_option(fn):
    return click.option(
        "--queue", "queue", envvar="HUEYSCOPE_QUEUE", default=None,
        show_envvar=True,
        help="Queue: a SQLite file path (default ./queue.db), or a redis:// URL.",
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


def app_option(fn):
    return click.option(
        "--app", "app", envvar="HUEYSCOPE_APP", default=None, show_envvar=True,
        help="Huey instance to use, as module:attribute "
             "(default: the demo catalogue, hueyscope.demo_tasks:huey).",
    )(fn)


def no_args_option(fn):
    """``--no-args``: record no task arguments (args and kwargs stay NULL).

    Passes ``no_args=True`` when given and ``None`` otherwise, so that
    HUEYSCOPE_NO_ARGS=1 still applies through :meth:`Settings.build`.
    Combined with :func:`settings_options` it goes into ``settings.no_args``.
    """
    return click.option(
        "--no-args", "no_args", is_flag=True, flag_value=True, default=None,
        help="Record no task arguments in the event store (args and kwargs "
             "stay empty). Env: HUEYSCOPE_NO_ARGS=1.",
    )(fn)


def settings_options(fn):
    """Add --queue, --events, --durability and --app and pass ``settings``.

    A command that also has :func:`no_args_option` gets its value in
    ``settings.no_args``.
    """

    @queue_option
    @events_option
    @durability_option
    @app_option
    @functools.wraps(fn)
    def wrapper(*args, queue, events, durability, app, **kwargs):
        try:
            settings = Settings.build(
                queue=queue, events=events, durability=durability, app=app,
                no_args=kwargs.pop("no_args", None))
        except ValueError as exc:
            raise BadInput(str(exc))
        return fn(*args, settings=settings, **kwargs)

    return wrapper


class _OneLineParamType:
    """Mixin: a bad value is BadInput (one ``Error:`` line, exit 2), not a
    usage error with the whole usage text around it."""

    def fail(self, message, param=None, ctx=None):
        if param is not None:
            hint = param.get_error_hint(ctx) if ctx is not None else param.name
            message = "Invalid value for %s: %s" % (hint, message)
        raise BadInput(message)


class Choice(_OneLineParamType, click.Choice):
    """click.Choice reporting a bad value on one line."""


class IntRange(_OneLineParamType, click.IntRange):
    """click.IntRange reporting a bad (or non-numeric) value on one line."""


class FloatRange(_OneLineParamType, click.FloatRange):
    """click.FloatRange reporting a bad (or non-numeric) value on one line."""


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
