"""Load a user's Huey instance from a ``module:attribute`` path.

This is how huey's own consumer finds an app (``huey_consumer myapp.huey``),
with one difference: every failure is a one-line ValueError that commands
turn into ``Error: ...`` and exit code 2, never a traceback.
"""
import importlib
import os
import sys

from huey.api import Huey

from hueyscope.queue import check_sqlite_file


def load_app(spec):
    """Import ``module:attribute`` (attribute may be dotted) and return the Huey.

    The current folder is importable, as with ``python -m``, so
    ``--app tasks:huey`` finds ./tasks.py.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError("--app must look like module:attribute, not %r" % spec)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ValueError("cannot import %s: no module named %s" % (
                module_name, exc.name)) from None
        raise ValueError("cannot import %s: %s" % (module_name, exc)) from None
    except ValueError as exc:
        # Our own settings and queue checks raise ValueError with a message
        # made for the user (e.g. "queue.db is not a SQLite database").
        raise ValueError(str(exc)) from None
    except Exception as exc:
        raise ValueError("cannot import %s: %s: %s" % (
            module_name, type(exc).__name__, _one_line(exc))) from None
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError("module %s has no attribute %s" % (
                module_name, attr)) from None
    if not isinstance(obj, Huey):
        raise ValueError("%s is a %s, not a Huey instance" % (
            spec, type(obj).__name__))
    return obj


def _one_line(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


def check_queue_path(settings):
    """Raise ValueError (one line) if the SQLite queue cannot be opened or made.

    Touches nothing: a foreign file is refused by its header, a missing file
    needs an existing, writable folder.
    """
    if settings.queue_scheme != "sqlite":
        return
    path = settings.queue_path
    if os.path.isdir(path):
        raise ValueError("queue %s is a folder, not a SQLite file" % path)
    check_sqlite_file(path)
    if os.path.exists(path):
        if not os.access(path, os.R_OK | os.W_OK):
            raise ValueError("cannot write queue %s: permission denied" % path)
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(folder):
        raise ValueError("cannot create queue %s: folder %s does not exist" % (
            path, folder))
    if not os.path.isdir(folder):
        raise ValueError("cannot create queue %s: %s is not a folder" % (
            path, folder))
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError("cannot create queue %s: folder %s is not writable" % (
            path, folder))


def open_app(settings):
    """The settings' Huey instance, checked and connected, for a command.

    Exports the settings first so an app that builds its Huey at import time
    (as the demo catalogue does) uses the same queue and event store. Raises
    ValueError with a one-line message for anything wrong.
    """
    from hueyscope.queue import open_queue
    from hueyscope.settings import DEFAULT_APP

    settings.export_env()
    if settings.app == DEFAULT_APP:
        check_queue_path(settings)
    huey = load_app(settings.app)
    open_queue(huey)
    return huey
