"""Django projects under ``hueyscope consume --app djsite.settings:HUEY``.

An ``--app`` whose module is a Django settings module (it defines
``INSTALLED_APPS``) is loaded the way djhuey's ``manage.py run_huey`` loads
a project: DJANGO_SETTINGS_MODULE is set to it, ``django.setup()`` runs,
and the ``tasks`` module of every installed app is imported. The attribute
may be a Huey or djhuey's dict form (``HUEY = {"huey_class": ...}``): the
dict's Huey is the one djhuey builds. With DJANGO_SETTINGS_MODULE set, any
other ``--app`` (``shop.tasks:huey``) is loaded after the same set-up, as
its models need.

Database connections are handled as djhuey's ``db_task`` does, for every
task: stale connections are closed before and after each one (a task that
is not a ``db_task`` no longer keeps a thread's connection open forever),
and none is left open for worker processes to inherit.
"""
import importlib.util
import logging
import os

SETTINGS_VARIABLE = "DJANGO_SETTINGS_MODULE"
HOOK = "hueyscope_django_connections"

_set_up = None  # the settings module Django was set up with here


def wanted():
    """The settings module DJANGO_SETTINGS_MODULE names, if Django is there."""
    name = os.environ.get(SETTINGS_VARIABLE)
    if name and importlib.util.find_spec("django") is not None:
        return name
    return None


def is_set_up():
    """True once :func:`setup` set Django up in this process."""
    return _set_up is not None


def is_settings_module(module):
    """True if ``module`` is a Django settings module."""
    return isinstance(getattr(module, "INSTALLED_APPS", None), (list, tuple))


def setup(settings_module):
    """Set Django up with ``settings_module`` and import the apps' tasks.

    Raises ValueError (one line) if Django is missing, was set up with
    other settings, or fails to set up.
    """
    global _set_up
    if _set_up == settings_module:
        return
    if _set_up is not None:
        raise ValueError("Django is set up with %s=%s, and --app names "
                         "the settings module %s: make them one" % (
                             SETTINGS_VARIABLE, _set_up, settings_module))
    try:
        import django
        from django.utils.module_loading import autodiscover_modules
    except ImportError:
        raise ValueError("%s is a Django settings module, but Django is not "
                         "installed" % settings_module) from None
    os.environ[SETTINGS_VARIABLE] = settings_module
    try:
        django.setup()
        # As run_huey does: tasks live in each app's tasks.py.
        autodiscover_modules("tasks")
    except Exception as exc:
        text = (str(exc).strip().splitlines() or [""])[0]
        raise ValueError("cannot set up Django with %s: %s: %s" % (
            settings_module, type(exc).__name__, text)) from None
    _set_up = settings_module
    _keep_our_loggers()


def huey_of(value):
    """The Huey a settings' HUEY stands for (djhuey builds it from a dict)."""
    if _set_up is not None and isinstance(value, dict):
        from huey.contrib.djhuey import HUEY

        return HUEY
    return value


def prepare(huey):
    """Close stale connections around each task; none open to fork."""
    if _set_up is None:
        return
    from django.db import close_old_connections, connections

    # Not in immediate mode, where tasks run inside the caller's
    # transaction (a TestCase's), as db_task does.
    def before(task):
        if not huey.immediate:
            close_old_connections()

    def after(task, task_value, exc):
        if not huey.immediate:
            close_old_connections()

    huey.pre_execute(name=HOOK)(before)
    huey.post_execute(name=HOOK)(after)
    connections.close_all()


def _keep_our_loggers():
    # Django's LOGGING disables the loggers that exist when it is applied
    # (disable_existing_loggers, True unless set): ours say where events
    # go and count any not recorded, and must not go quiet.
    for name, logger in logging.root.manager.loggerDict.items():
        if name.startswith("hueyscope") and isinstance(logger, logging.Logger):
            logger.disabled = False
