"""Load a user's Huey instance from ``module:attribute`` or ``file.py:attribute``.

This is how huey's own consumer finds an app (``huey_consumer myapp.huey``),
with one difference: every failure is a one-line ValueError that commands
turn into ``Error: ...`` and exit code 2, never a traceback.
"""
import contextlib
import importlib
import os
import re
import sys

from huey.api import Huey

from hueyscope.queue import check_queue_file


APP_FORM = "module:attribute or path/to/file.py:attribute"
_MODULE_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def load_app(spec):
    """Import ``module:attribute`` (attribute may be dotted) and return the Huey.

    A Django settings module (``djsite.settings:HUEY``) sets Django up and
    imports the installed apps' tasks first (see :mod:`hueyscope.django`).

    The module may also be given as a file, ``path/to/tasks.py:huey``: its
    folder is put first on sys.path and it is imported by its name, so task
    names are the same as when it is imported as ``tasks:huey``. The current
    folder is importable, as with ``python -m``, so ``--app tasks:huey``
    finds ./tasks.py.
    """
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ValueError("--app must look like %s, not %r" % (APP_FORM, spec))
    if target.endswith(".py") or "/" in target or os.sep in target:
        module_name = _importable_file(target)
    else:
        module_name = target
        if not _MODULE_NAME.match(module_name):
            raise ValueError("--app must look like %s, not %r" % (APP_FORM, spec))
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
    from hueyscope import django as django_support

    # An app that imports Django code needs Django set up first, as
    # manage.py does it.
    django_settings = django_support.wanted()
    if django_settings and django_settings != module_name:
        django_support.setup(django_settings)
    module = _import(module_name)
    if target != module_name and not _same_file(module, target):
        raise ValueError("cannot import %s: the name %s is taken by %s" % (
            target, module_name, getattr(module, "__file__", "a built-in module")))
    if django_support.is_settings_module(module):
        django_support.setup(module_name)
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError("module %s has no attribute %s" % (
                target, attr)) from None
    obj = django_support.huey_of(obj)
    if not isinstance(obj, Huey):
        kind = type(obj).__name__
        raise ValueError("%s is %s %s, not a Huey instance" % (
            spec, "an" if kind[0] in "aeiouAEIOU" else "a", kind))
    django_support.prepare(obj)
    return obj


def _importable_file(path):
    """Put the folder of the Python file ``path`` on sys.path; its module name."""
    if not path.endswith(".py"):
        raise ValueError("--app must look like %s: %s is not a .py file"
                         % (APP_FORM, path))
    if not os.path.isfile(path):
        raise ValueError("cannot import %s: no such file" % path)
    folder, name = os.path.split(os.path.abspath(path))
    name = name[:-len(".py")]
    if not _MODULE_NAME.match(name) or "." in name:
        raise ValueError("cannot import %s: %r is not a module name" % (path, name))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return name


def _same_file(module, path):
    found = getattr(module, "__file__", None)
    return found is not None and os.path.realpath(found) == os.path.realpath(path)


def _import(module_name):
    try:
        return importlib.import_module(module_name)
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


def _one_line(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


def check_queue_path(settings):
    """Raise ValueError (one line) if the SQLite queue cannot be opened or made.

    Touches nothing: a file that is not a queue is refused by what it holds
    (read without leaving a trace), a missing file needs an existing,
    writable folder.
    """
    if settings.queue_scheme != "sqlite":
        return
    path = settings.queue_path
    if os.path.isdir(path):
        raise ValueError("queue %s is a folder, not a SQLite file" % path)
    check_queue_file(path)
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


def open_app(settings, events=True, check=None):
    """The settings' Huey instance, checked and connected, for a command.

    Exports the settings first so an app that builds its Huey at import time
    (as the demo catalogue does) uses the same queue and event store. With
    ``events`` (commands that record), the event store is checked before
    anything is created. ``check(huey)`` may refuse the loaded app by
    raising ValueError. Raises ValueError with a one-line message for
    anything wrong, and then leaves no file behind that was not there.
    """
    from hueyscope.events.schema import check_event_store
    from hueyscope.queue import open_queue
    from hueyscope.settings import DEFAULT_APP

    settings.export_env()
    if settings.app == DEFAULT_APP:
        check_queue_path(settings)
    if events:
        check_distinct_files(settings)
        check_event_store(settings.events, must_exist=False)
    # Importing an app builds its Huey, and huey creates the queue file
    # there and then, before the attribute is found to be missing or not a
    # Huey: undo that.
    with _removed_if_failed(_files_of(settings)):
        huey = load_app(settings.app)
        check_controls(huey)
        if check is not None:
            check(huey)
    open_queue(huey)
    return huey


def check_controls(huey):
    """Raise ValueError for a task declaring unique or concurrency wrongly
    (see :func:`hueyscope.queue.control.check_tasks`)."""
    from hueyscope.queue.control import check_tasks

    check_tasks(huey)


def check_has_tasks(huey, app):
    """Raise ValueError if ``huey`` has no task at all.

    A consumer of such an app can run nothing, and takes every message off
    the queue as one it cannot run.
    """
    if huey._registry._registry:
        return
    from hueyscope import django as django_support

    where = ("no tasks.py of INSTALLED_APPS defines one"
             if django_support.is_set_up() else
             "import the modules that define them where the Huey is built")
    raise ValueError("%s has no tasks registered (%s); a consumer would "
                     "take every message as one it cannot run" % (app, where))


def check_distinct_files(settings):
    """Raise ValueError if the queue and the event store are one file."""
    if settings.queue_scheme != "sqlite":
        return
    queue, events = settings.queue_path, settings.events
    if os.path.realpath(queue) == os.path.realpath(events):
        raise ValueError("the queue and the event store must be two files, "
                         "not both %s" % queue)


def _files_of(settings):
    paths = [settings.events]
    if settings.queue_scheme == "sqlite":
        paths.append(settings.queue_path)
    return [p + suffix for p in paths for suffix in ("", "-wal", "-shm", "-journal")]


# Tables whose rows are someone's work: a file holding any is never removed.
_WORK_TABLES = ("task", "schedule", "kv", "hueyscope_lease", "hueyscope_lock",
                "hueyscope_dead_letter", "events", "tasks", "runs")


@contextlib.contextmanager
def _removed_if_failed(paths):
    """On an exception, remove those of ``paths`` that appeared meanwhile.

    A new database is removed only while it holds no work: one that another
    process created and filled at the same moment is left to it.
    """
    existed = {p for p in paths if os.path.lexists(p)}
    try:
        yield
    except Exception:
        new = [p for p in paths if p not in existed and os.path.lexists(p)]
        mains = [p for p in new if not p.endswith(("-wal", "-shm", "-journal"))]
        kept = {p for p in mains if not _holds_no_work(p)}
        for path in new:
            if not any(path.startswith(k) for k in kept):
                with contextlib.suppress(OSError):
                    os.remove(path)
        raise


def _holds_no_work(path):
    import sqlite3

    from hueyscope.readonly import read_only

    def count(conn):
        tables = {row[0] for row in conn.execute(
            "select name from sqlite_master where type = 'table'")}
        return sum(conn.execute("select count(*) from [%s]" % t).fetchone()[0]
                   for t in _WORK_TABLES if t in tables)

    if os.path.getsize(path) == 0:
        return True
    try:
        return read_only(path, count) == 0
    except sqlite3.Error:
        return False
